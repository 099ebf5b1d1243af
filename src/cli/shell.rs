//! `lifeboat completions SHELL` and `lifeboat man`: shell completions and man pages,
//! generated from the same clap definitions as the parser, so they cannot drift from it.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Failure};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write a page per command into this directory (lifeboat.1, lifeboat-backup.1,
    /// lifeboat-restore-run.1, ...), e.g. /usr/local/share/man/man1. Without it, the main
    /// page goes to standard output.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`.
pub(super) fn completions(args: &CompletionsArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "lifeboat", &mut buf);
    out.write_all(&buf).map_err(Failure::Output)
}

/// Writes the man pages into `args.dir`, or the main page to `out`.
pub(super) fn man(args: &ManArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let cmd = Cli::command();
    let Some(dir) = &args.dir else {
        return clap_mangen::Man::new(cmd)
            .render(out)
            .map_err(Failure::Output);
    };
    if !dir.is_dir() {
        return Err(Failure::Usage(format!(
            "--dir {}: not a directory (create it first)",
            dir.display()
        )));
    }
    let context = |e: std::io::Error| {
        Failure::Output(std::io::Error::new(
            e.kind(),
            format!("writing man pages into {}: {e}", dir.display()),
        ))
    };
    clap_mangen::generate_to(cmd, dir).map_err(context)?;
    let pages = std::fs::read_dir(dir)
        .map_err(context)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("lifeboat") && n.ends_with(".1"))
        .count();
    writeln!(out, "{pages} man pages in {}", dir.display()).map_err(Failure::Output)
}
