#!/bin/sh
# order-svc as the peer's users wire it: the inventory's address comes from the variable every
# service gets for every interface of the topology (FAULTBOX_<SVC>_<IFACE>_ADDR).
INVENTORY_ADDR="${FAULTBOX_INVENTORY_MAIN_ADDR:?not wired}" exec "$(dirname "$0")/../../target/release/order-svc"
