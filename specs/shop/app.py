#!/usr/bin/env python3
"""The shop: an HTTP service that writes orders to PostgreSQL and caches them in Redis.

POST /orders {"id": 1, "item": "book"}  -> 201, or 503 when the INSERT fails (nothing is cached),
                                           or 504 when the database does not answer in time
GET  /orders/<id>                       -> 200 {"id", "item", "source": "cache"|"db"}; a Redis error
                                           falls back to PostgreSQL; 404 when unknown
GET  /health                            -> 200

Environment: PORT, PG_ADDR and REDIS_ADDR ("host:port"), DB_TIMEOUT (seconds, default 1).
"""

import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pg8000.native
import redis

PORT = int(os.environ["PORT"])
PG_HOST, PG_PORT = os.environ["PG_ADDR"].rsplit(":", 1)
REDIS_HOST, REDIS_PORT = os.environ["REDIS_ADDR"].rsplit(":", 1)
DB_TIMEOUT = float(os.environ.get("DB_TIMEOUT", "1"))


def db():
    return pg8000.native.Connection(
        "postgres", host=PG_HOST, port=int(PG_PORT), database="postgres", timeout=DB_TIMEOUT
    )


def cache():
    return redis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), socket_timeout=2)


class Shop(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, {"ok": True})
        if not self.path.startswith("/orders/"):
            return self.answer(404, {"error": "not found"})
        order_id = self.path.rsplit("/", 1)[1]
        try:
            item = cache().get(f"order:{order_id}")
            if item is not None:
                return self.answer(200, {"id": order_id, "item": item.decode(), "source": "cache"})
        except redis.RedisError as e:
            self.log_message("cache unavailable, reading the database: %s", e)
        try:
            conn = db()
            rows = conn.run("SELECT item FROM orders WHERE id = :id", id=int(order_id))
            conn.close()
        except (socket.timeout, TimeoutError) as e:
            return self.answer(504, {"error": f"database timeout: {e}"})
        except Exception as e:  # noqa: BLE001 - any database failure is a 503
            return self.answer(503, {"error": str(e)})
        if not rows:
            return self.answer(404, {"error": "no such order"})
        return self.answer(200, {"id": order_id, "item": rows[0][0], "source": "db"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        order = json.loads(self.rfile.read(length) or b"{}")
        try:
            conn = db()
            conn.run("INSERT INTO orders (id, item) VALUES (:id, :item)", id=order["id"], item=order["item"])
            conn.close()
        except (socket.timeout, TimeoutError) as e:
            return self.answer(504, {"error": f"database timeout: {e}"})
        except Exception as e:  # noqa: BLE001 - any database failure is a 503
            return self.answer(503, {"error": str(e)})
        try:
            cache().set(f"order:{order['id']}", order["item"])
        except redis.RedisError as e:
            self.log_message("order %s not cached: %s", order["id"], e)
        return self.answer(201, {"id": order["id"]})


def main():
    conn = db()
    conn.run("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, item text NOT NULL)")
    conn.close()
    ThreadingHTTPServer(("127.0.0.1", PORT), Shop).serve_forever()


if __name__ == "__main__":
    main()
