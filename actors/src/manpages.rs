//! Manual pages and shell completions, generated from the definitions the program itself uses.
//!
//! - `cohort(8)` and one page per subcommand (`cohort-agent(8)`, `cohort-config-check(8)`, ...) from
//!   the clap command line ([`crate::cli::Cli`]) with `clap_mangen`: the same text as `--help`.
//! - `cohort.toml(5)` from the loader's table of keys ([`crate::settings_load::key_docs`]): every key
//!   with its default and the comment of `config/default.toml`, what a value must be, and whether a
//!   reload applies it. The loader checks configurations against the same table, so the page and the
//!   program cannot disagree about which keys exist.
//! - bash, zsh and fish completions with `clap_complete`.
//!
//! [`write_all`] writes them under one directory (`man/man8`, `man/man5`, `completions/`); the hidden
//! command `cohort generate-docs --out DIR` calls it, and the package build (`scripts/build-deb`) uses
//! that.

use crate::cli::Cli;
use crate::settings_load::{key_docs, Apply};
use clap::CommandFactory;
use std::io;
use std::path::{Path, PathBuf};

/// The section of the command pages (system administration).
pub const COMMAND_SECTION: &str = "8";

/// The name of the manual the pages belong to.
const MANUAL: &str = "cohort manual";

fn source() -> String {
    format!("cohort {}", env!("CARGO_PKG_VERSION"))
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would start a request.
fn roff_escape(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The command pages: (file name, contents), `cohort.8` first.
///
/// # Errors
/// Only if rendering into memory fails.
pub fn command_pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut pages = Vec::new();
    let subs: Vec<String> = visible_paths(&cmd, "cohort");
    let mut top = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section(COMMAND_SECTION)
        .manual(MANUAL)
        .source(source())
        .render(&mut top)?;
    top.extend_from_slice(see_also(&subs, "cohort").as_bytes());
    pages.push((format!("cohort.{COMMAND_SECTION}"), top));
    for path in subs {
        let words: Vec<&str> = path.split(' ').collect();
        let mut sub = &cmd;
        for w in &words[1..] {
            match sub.find_subcommand(w) {
                Some(s) => sub = s,
                None => return Err(io::Error::other(format!("no subcommand {w} in {path}"))),
            }
        }
        let title = words.join("-");
        let page_cmd = sub.clone().name(title.clone()).bin_name(path.clone());
        let mut out = Vec::new();
        clap_mangen::Man::new(page_cmd)
            .title(title.clone())
            .section(COMMAND_SECTION)
            .manual(MANUAL)
            .source(source())
            .render(&mut out)?;
        out.extend_from_slice(see_also(&[], &title).as_bytes());
        pages.push((format!("{title}.{COMMAND_SECTION}"), out));
    }
    Ok(pages)
}

/// Every visible subcommand path below `cmd` ("cohort agent", "cohort config check", ...).
fn visible_paths(cmd: &clap::Command, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let path = format!("{prefix} {}", sub.get_name());
        out.push(path.clone());
        out.extend(visible_paths(sub, &path));
    }
    out
}

fn see_also(subs: &[String], this: &str) -> String {
    let mut refs: Vec<String> =
        subs.iter().map(|p| format!("{}({COMMAND_SECTION})", p.replace(' ', "-"))).collect();
    if this != "cohort" {
        refs.push(format!("cohort({COMMAND_SECTION})"));
    }
    refs.push("cohort.toml(5)".to_string());
    refs.push("systemctl(1)".to_string());
    let body: Vec<String> = refs
        .iter()
        .map(|r| {
            let (name, sec) = r.trim_end_matches(')').split_once('(').unwrap_or((r, ""));
            format!(".BR {} ({})", roff_escape(name), sec)
        })
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", body.join(" ,\n"))
}

/// The `cohort.toml(5)` page.
pub fn config_page() -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH COHORT.TOML 5 \"\" \"{}\" \"{MANUAL}\"\n.SH NAME\ncohort.toml \\- configuration of the cohort agent\n",
        source()
    ));
    out.push_str(".SH SYNOPSIS\n/etc/cohort/cohort.toml\n.br\n\\fBcohort agent\\fR [\\fB\\-\\-config\\fR \\fIFILE\\fR]...\n");
    out.push_str(
        ".SH DESCRIPTION\n\
         The agent's configuration is TOML, read in layers, each overriding the one before: the built\\-in \
         defaults listed below, \\fI/etc/cohort/cohort.toml\\fR if it exists, each \\fB\\-\\-config\\fR \
         \\fIFILE\\fR in the order given, environment variables \\fBCOHORT__\\fR\\fISECTION\\fR\\fB__\\fR\\fIKEY\\fR \
         (for example \\fBCOHORT__TIMING__FAILURE_TIMEOUT_MS=2000\\fR), then the command\\-line flags of \
         \\fBcohort agent\\fR. Put only the keys you change in your file.\n\
         .PP\n\
         \\fBcohort config check\\fR prints the effective value of every key and the layer it came from, \
         and how the result differs from the agent running on this node. A mistake is reported as one \
         line naming the key, the value, where it came from and what is expected.\n\
         .PP\n\
         \\fBRELOAD\\fR: keys marked \"reload\" below are applied by a running agent when it receives \
         SIGHUP (\\fBsystemctl reload cohort\\fR); every other key keeps its running value until the \
         agent is restarted, and the reload says which changed keys need a restart.\n",
    );
    for section in key_docs() {
        out.push_str(&format!(".SH \"[{}]\"\n", section.name));
        if !section.doc.is_empty() {
            out.push_str(&roff_paragraphs(&section.doc));
        }
        for k in section.keys {
            let key = k.key.split_once('.').map_or(k.key.as_str(), |(_, name)| name);
            out.push_str(&format!(".TP\n\\fB{}\\fR = {}\n", roff_escape(key), roff_escape(&k.default)));
            out.push_str(&roff_paragraphs(&k.doc));
            let when = match k.apply {
                Apply::Reload => "reload",
                Apply::Restart => "restart",
            };
            out.push_str(&format!(".IP\nValue: {}. Takes effect at: {when}.\n", roff_escape(&k.expected)));
        }
    }
    out.push_str(
        ".SH FILES\n\
         .TP\n/etc/cohort/cohort.toml\nThe system configuration file.\n\
         .TP\n/etc/cohort/cluster.key\nThe cluster key (\\fBcohort keygen\\fR), mode 0600 or 0400.\n\
         .TP\n/var/lib/cohort\nThe default data directory: epoch, registry, event log.\n\
         .SH \"SEE ALSO\"\n.BR cohort (8),\n.BR cohort\\-agent (8),\n.BR cohort\\-config\\-check (8)\n",
    );
    out
}

/// A comment block as roff: plain lines joined into paragraphs (an empty line separates them), lines
/// indented by two or more spaces kept as they are (examples).
fn roff_paragraphs(doc: &str) -> String {
    let mut out = String::new();
    let mut in_example = false;
    for line in doc.lines() {
        let example = line.starts_with("  ");
        if example && !in_example {
            out.push_str(".nf\n");
        } else if !example && in_example {
            out.push_str(".fi\n");
        }
        in_example = example;
        if line.trim().is_empty() {
            out.push_str(".IP\n");
        } else {
            out.push_str(&roff_escape(line));
            out.push('\n');
        }
    }
    if in_example {
        out.push_str(".fi\n");
    }
    out
}

/// The completion scripts: (file name, contents) for bash, zsh and fish.
pub fn completions() -> Vec<(String, Vec<u8>)> {
    use clap_complete::Shell;
    [(Shell::Bash, "cohort.bash"), (Shell::Zsh, "_cohort"), (Shell::Fish, "cohort.fish")]
        .into_iter()
        .map(|(shell, file)| {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cohort", &mut out);
            (file.to_string(), out)
        })
        .collect()
}

/// Writes every page and completion under `dir`: `man/man8/*.8`, `man/man5/cohort.toml.5`,
/// `completions/{cohort.bash,_cohort,cohort.fish}`. Returns the files written.
///
/// # Errors
/// The operating system's error, naming the file.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut put = |sub: &str, name: &str, bytes: &[u8]| -> io::Result<()> {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
        let p = d.join(name);
        std::fs::write(&p, bytes).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        written.push(p);
        Ok(())
    };
    for (name, bytes) in command_pages()? {
        put(&format!("man/man{COMMAND_SECTION}"), &name, &bytes)?;
    }
    put("man/man5", "cohort.toml.5", config_page().as_bytes())?;
    for (name, bytes) in completions() {
        put("completions", &name, &bytes)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings_load::known_keys;

    #[test]
    fn there_is_a_page_for_the_command_and_each_visible_subcommand() {
        let pages = command_pages().expect("render");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "cohort.8",
            "cohort-agent.8",
            "cohort-config-check.8",
            "cohort-fence-ack.8",
            "cohort-key-install.8",
            "cohort-key-use.8",
            "cohort-lock-serve.8",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate-docs")), "a hidden command got a page: {names:?}");
        let agent =
            pages.iter().find(|(n, _)| n == "cohort-agent.8").map(|(_, b)| String::from_utf8_lossy(b));
        let agent = agent.expect("agent page");
        assert!(agent.contains(".TH cohort-agent 8"), "{agent}");
        assert!(agent.contains("log\\-level"), "the flags are documented: {agent}");
    }

    #[test]
    fn the_configuration_page_documents_every_key_the_loader_knows() {
        let page = config_page();
        for key in known_keys() {
            let (section, name) = key.split_once('.').expect("dotted");
            assert!(page.contains(&format!(".SH \"[{section}]\"")), "section {section} missing");
            assert!(page.contains(&format!("\\fB{}\\fR = ", roff_escape(name))), "{key} missing");
        }
        assert!(page.contains("Takes effect at: reload."), "reloadable keys are marked");
        assert!(page.contains("failure_timeout_ms\\fR = 1000"), "defaults are shown");
    }

    #[test]
    fn every_key_has_documentation_in_default_toml() {
        for section in key_docs() {
            for k in &section.keys {
                assert!(!k.doc.trim().is_empty(), "{} has no comment in config/default.toml", k.key);
                assert!(!k.default.is_empty(), "{} has no default", k.key);
            }
        }
    }

    #[test]
    fn completions_cover_the_subcommands() {
        for (name, bytes) in completions() {
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains("agent") && text.contains("keygen"), "{name} lacks subcommands");
        }
    }
}
