//! `faultctl completions SHELL` and `faultctl man DIR`: shell completions and man pages generated
//! from faultctl's command line (what `cargo xtask dist` installs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// What `cargo xtask dist` runs to generate faultctl's completions and man pages from its command
/// line: kept out of it so that neither shows these commands.
#[derive(Parser)]
#[command(name = "faultctl")]
pub enum Generate {
    /// Print a completion script for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (faultctl.1 and faultctl-<command>.1) into DIR.
    Man {
        /// Where the pages go (created when missing).
        dir: PathBuf,
    },
}

impl Generate {
    /// `faultctl completions SHELL` or `faultctl man DIR`, if that is the command line.
    pub fn requested() -> Option<Generate> {
        let first = std::env::args_os().nth(1)?;
        (first == "completions" || first == "man").then(Generate::parse)
    }

    /// Writes what was asked for about `cli` (faultctl's command line).
    pub fn run(self, cli: clap::Command) -> ExitCode {
        match self {
            Generate::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut cli.clone(),
                    "faultctl",
                    &mut std::io::stdout(),
                );
                ExitCode::SUCCESS
            }
            Generate::Man { dir } => match man_pages(cli, &dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write man pages into {}: {e}", dir.display());
                    ExitCode::from(1)
                }
            },
        }
    }
}

/// `<name>.1` for `cmd` and `<name>-<sub>.1` for each of its visible subcommands, into `dir`.
fn man_pages(mut cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    cmd.build();
    let write = |cmd: clap::Command, name: &str| -> std::io::Result<()> {
        let mut file = std::fs::File::create(dir.join(format!("{name}.1")))?;
        clap_mangen::Man::new(cmd).render(&mut file)
    };
    let name = cmd.get_name().to_owned();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        // After build(), a subcommand's display name is `<name>-<sub>`, the page's title.
        let page = format!("{name}-{}", sub.get_name());
        write(sub.clone(), &page)?;
    }
    write(cmd, &name)
}
