//! How many tests `faultctl run --jobs N` runs at once.
//!
//! Each test gets its own session, but sessions only stay apart when nothing they use is shared:
//! two sessions whose services listen on the same fixed port on the host network steal each
//! other's connections (one's healthcheck answered by the other's listener), and two sessions
//! attached to the same cgroup share its processes and rules. So more than one job runs only when
//! faultd isolates each session's network, or when the spec's services listen on no port and
//! none is attached; otherwise the run falls back to one job, with a one-line note. Files are not
//! isolated: services that name fixed files under `/tmp` or `/var` (an op's path, an argument, an
//! environment value) would share them between tests, so they run one test at a time too.

use crate::spec::model::Spec;

/// Most tests a run starts at once, whatever `--jobs` says: faultd refuses more sessions per
/// client than this by default.
pub const MAX_JOBS: usize = 32;

/// What the run can share safely, as far as parallel sessions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    /// faultd gives each session its own network namespace.
    pub isolated_network: bool,
    /// Fixed ports the spec's services listen on (interfaces and proxies).
    pub ports: Vec<u16>,
    /// Services attached to an existing cgroup (shared by every session).
    pub attached: Vec<String>,
    /// Fixed files the services name (op path globs; arguments and environment values under `/tmp`
    /// or `/var`), which every session would share.
    pub files: Vec<String>,
}

impl Sharing {
    /// What `spec`'s services would share between sessions, on a faultd that does (or does not)
    /// isolate sessions' networks.
    pub fn of(spec: &Spec, isolated_network: bool) -> Sharing {
        let mut ports: Vec<u16> = spec
            .services
            .iter()
            .filter(|s| s.attach_cgroup.is_none())
            .flat_map(|s| &s.interfaces)
            .flat_map(|i| [Some(i.port), i.proxy_port])
            .flatten()
            .filter(|&p| p != 0)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let shared = |v: &&String| {
            ["/tmp", "/var"]
                .iter()
                .any(|d| v.as_str() == *d || v.starts_with(&format!("{d}/")))
        };
        let mut files: Vec<String> = spec
            .services
            .iter()
            .flat_map(|s| {
                let ops = s.ops.iter().filter_map(|o| o.path.clone());
                let named = s.argv.iter().chain(s.env.values()).filter(shared).cloned();
                ops.chain(named)
            })
            .collect();
        files.sort_unstable();
        files.dedup();
        Sharing {
            isolated_network,
            ports,
            files,
            attached: spec
                .services
                .iter()
                .filter(|s| s.attach_cgroup.is_some())
                .map(|s| s.name.clone())
                .collect(),
        }
    }
}

/// How many jobs a run uses, and why fewer than asked, when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jobs {
    /// Tests running at once (at least 1).
    pub jobs: usize,
    /// A one-line note for stderr when the run uses one job although more were asked (or were the
    /// default).
    pub note: Option<String>,
}

/// The number of jobs for `tests` selected tests: `requested` (`--jobs`), else `cpus`; at most one
/// per test and [`MAX_JOBS`]; one when sessions would share what `sharing` names.
pub fn effective(requested: Option<usize>, cpus: usize, tests: usize, sharing: &Sharing) -> Jobs {
    let wanted = requested.unwrap_or(cpus).clamp(1, MAX_JOBS);
    let jobs = wanted.min(tests.max(1));
    if jobs == 1 {
        return Jobs { jobs, note: None };
    }
    let why = if let Some(name) = sharing.attached.first() {
        Some(format!(
            "service `{name}` is attached to an existing cgroup, which every session would share"
        ))
    } else if !sharing.isolated_network && !sharing.ports.is_empty() {
        let ports: Vec<String> = sharing.ports.iter().map(u16::to_string).collect();
        Some(format!(
            "the services listen on fixed ports ({}) and faultd gives sessions no network namespace \
             of their own here",
            ports.join(", ")
        ))
    } else if !sharing.files.is_empty() {
        Some(format!(
            "the services use fixed files ({}) that tests running at once would share",
            sharing.files.join(", ")
        ))
    } else {
        None
    };
    match why {
        None => Jobs { jobs, note: None },
        Some(why) => Jobs {
            jobs: 1,
            note: Some(format!(
                "note: running tests one at a time, not {wanted} at once: {why}"
            )),
        },
    }
}

/// The number of CPUs this process may use (1 when unknown): the default of `--jobs`.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharing(isolated_network: bool, ports: &[u16], attached: &[&str]) -> Sharing {
        Sharing {
            isolated_network,
            ports: ports.to_vec(),
            attached: attached.iter().map(|s| (*s).to_owned()).collect(),
            files: Vec::new(),
        }
    }

    #[test]
    fn fixed_files_mean_one_job_with_a_note() {
        let mut files = sharing(true, &[5432], &[]);
        files.files = vec!["/tmp/*.wal".into(), "/tmp/inventory.wal".into()];
        let jobs = effective(Some(4), 4, 10, &files);
        assert_eq!(jobs.jobs, 1);
        assert_eq!(
            jobs.note.as_deref(),
            Some(
                "note: running tests one at a time, not 4 at once: the services use fixed files \
                 (/tmp/*.wal, /tmp/inventory.wal) that tests running at once would share"
            )
        );
    }

    #[test]
    fn defaults_to_the_cpus_and_never_more_than_the_tests() {
        let free = sharing(false, &[], &[]);
        assert_eq!(effective(None, 4, 10, &free).jobs, 4);
        assert_eq!(effective(None, 4, 3, &free).jobs, 3);
        assert_eq!(effective(Some(2), 4, 10, &free).jobs, 2);
        assert_eq!(effective(Some(1000), 4, 1000, &free).jobs, MAX_JOBS);
        // Zero CPUs reported, or no test selected: still one job.
        assert_eq!(effective(None, 0, 10, &free).jobs, 1);
        assert_eq!(effective(Some(4), 4, 0, &free).jobs, 1);
        assert_eq!(effective(Some(4), 4, 10, &free).note, None);
    }

    #[test]
    fn fixed_ports_on_the_host_network_mean_one_job_with_a_note() {
        let host = sharing(false, &[5432, 8080], &[]);
        let j = effective(Some(4), 2, 8, &host);
        assert_eq!(j.jobs, 1);
        assert_eq!(
            j.note.as_deref(),
            Some(
                "note: running tests one at a time, not 4 at once: the services listen on fixed \
                 ports (5432, 8080) and faultd gives sessions no network namespace of their own here"
            )
        );
        // Isolated sessions may use the same ports.
        let isolated = sharing(true, &[5432, 8080], &[]);
        assert_eq!(
            effective(Some(4), 2, 8, &isolated),
            Jobs {
                jobs: 4,
                note: None
            }
        );
        // One job asked (or one test, or one CPU): nothing to explain.
        assert_eq!(
            effective(Some(1), 2, 8, &host),
            Jobs {
                jobs: 1,
                note: None
            }
        );
        assert_eq!(
            effective(None, 1, 8, &host),
            Jobs {
                jobs: 1,
                note: None
            }
        );
        assert_eq!(
            effective(None, 4, 1, &host),
            Jobs {
                jobs: 1,
                note: None
            }
        );
    }

    #[test]
    fn attached_services_mean_one_job_even_when_isolated() {
        let j = effective(None, 4, 8, &sharing(true, &[], &["db"]));
        assert_eq!(j.jobs, 1);
        assert!(j.note.unwrap().contains("service `db` is attached"));
    }

    #[test]
    fn a_specs_sharing_lists_its_ports_once_and_its_attached_services() {
        let dir = std::env::temp_dir().join(format!("faultctl-jobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spec.star");
        std::fs::write(
            &path,
            "a = service(\"a\", \"/bin/true\", interface(\"main\", \"tcp\", 9000))\n\
             b = service(\"b\", \"/bin/true\", interface(\"main\", \"http\", 8080), \
             interface(\"admin\", \"http\", 9000))\n\
             c = service(\"c\", \"/bin/true\")\n\
             def test_one():\n    pass\n",
        )
        .unwrap();
        let rt = crate::spec::load(&path).unwrap();
        assert_eq!(
            Sharing::of(rt.spec(), false),
            sharing(false, &[8080, 9000], &[])
        );
        assert!(Sharing::of(rt.spec(), true).isolated_network);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
