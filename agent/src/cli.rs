//! The command line: `register`, `run` and `status`, their options, help and
//! version. Parsed by hand rather than with clap, which cost about 230 kB of the
//! shipped binary (and the agent's idle RSS follows its size).
//!
//! [`parse`] returns the [`Command`] to run or an [`Exit`]: help or version text
//! for stdout (exit 0), or a usage error for stderr (exit 2). Each option is
//! given at most once, as `--name value` or `--name=value`; anything else is an
//! error. No message echoes the value given to `--token`, or a bare argument
//! to `register` (it may be a token whose `--token` was mistyped).

use crate::state::DEFAULT_STATE_DIR;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Register this server with a control plane, using a one-time token.
    Register {
        server: String,
        token: TokenSource,
        state_dir: PathBuf,
        hostname: Option<String>,
        no_pqc: bool,
        force: bool,
    },
    /// Run the agent.
    Run {
        state_dir: PathBuf,
        config: Option<PathBuf>,
    },
    /// Show the registration, keys, certificate and last contact.
    Status { state_dir: PathBuf },
}

/// Where the registration token comes from: exactly one of `--token` and
/// `--token-file`.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given on the command line.
    Arg(String),
    /// A file to read it from, or standard input for `-`.
    File(PathBuf),
}

/// Keeps the token out of debug output.
impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Arg(_) => f.write_str("Arg(<redacted>)"),
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// The end of a command line that names no command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Help or version text, for stdout; exit 0.
    Print(String),
    /// Bad usage (or no arguments at all), for stderr; exit 2.
    Usage(String),
}

impl Exit {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Print(_) => 0,
            Exit::Usage(_) => 2,
        }
    }
}

const BIN: &str = "pilothouse-agent";
const ABOUT: &str = "The Pilothouse agent: dials out to the control plane, runs the operations it signs and reports metrics.";
const HELP_ABOUT: &str = "Print this message or the help of the given subcommand(s)";

/// A subcommand: what its help page shows and the options it accepts.
struct Sub {
    name: &'static str,
    about: &'static str,
    /// The usage line, after the program name.
    usage: &'static str,
    opts: &'static [Opt],
    /// Whether an error may quote a bare argument given to this subcommand.
    quote_bare: bool,
}

/// One `--name` a subcommand accepts.
struct Opt {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    default: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum Kind {
    /// Takes no value.
    Flag,
    /// A UTF-8 value; may be empty.
    Text(&'static str),
    /// A path, taken as given (any bytes but none at all).
    Path(&'static str),
}

const STATE_DIR: Opt = Opt {
    name: "state-dir",
    kind: Kind::Path("DIR"),
    help: "Where the agent keeps its keys and state",
    default: Some(DEFAULT_STATE_DIR),
};

const REGISTER: Sub = Sub {
    name: "register",
    about: "Register this server with a control plane, using a one-time token",
    usage: "register [OPTIONS] --server <URL>",
    opts: &[
        Opt {
            name: "server",
            kind: Kind::Text("URL"),
            help: "The control plane's agent gateway, https://HOST:PORT",
            default: None,
        },
        Opt {
            name: "token",
            kind: Kind::Text("TOKEN"),
            help: "The registration token from the dashboard (pht1_...). Visible to other users in `ps` while the command runs: prefer --token-file",
            default: None,
        },
        Opt {
            name: "token-file",
            kind: Kind::Path("FILE"),
            help: "Read the registration token from this file, or from standard input with `-`",
            default: None,
        },
        STATE_DIR,
        Opt {
            name: "hostname",
            kind: Kind::Text("NAME"),
            help: "The name to register under (default: the kernel's host name)",
            default: None,
        },
        Opt {
            name: "no-pqc",
            kind: Kind::Flag,
            help: "Register without a post-quantum (X-Wing) key: \"Classical fallback\"",
            default: None,
        },
        Opt {
            name: "force",
            kind: Kind::Flag,
            help: "Replace an existing registration",
            default: None,
        },
    ],
    quote_bare: false,
};

const RUN: Sub = Sub {
    name: "run",
    about: "Run the agent (normally started by systemd)",
    usage: "run [OPTIONS]",
    opts: &[
        STATE_DIR,
        Opt {
            name: "config",
            kind: Kind::Path("FILE"),
            help: "Configuration file [default: /etc/pilothouse/agent.toml, if present]",
            default: None,
        },
    ],
    quote_bare: true,
};

const STATUS: Sub = Sub {
    name: "status",
    about: "Show the registration, keys, certificate and last contact",
    usage: "status [OPTIONS]",
    opts: &[STATE_DIR],
    quote_bare: true,
};

const SUBS: [&Sub; 3] = [&REGISTER, &RUN, &STATUS];

/// Parses the arguments after the program name (`std::env::args_os().skip(1)`)
/// into the command to run, or the [`Exit`] to end with instead: help, version
/// or a usage error.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, Exit> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Err(Exit::Usage(top_help()));
    };
    match first.to_str() {
        Some("-h" | "--help") => Err(Exit::Print(top_help())),
        Some("-V" | "--version") => Err(Exit::Print(format!("{BIN} {}\n", crate::VERSION))),
        Some("help") => Err(help_command(args)),
        Some("register") => register(options(&REGISTER, args)?),
        Some("run") => {
            let mut given = options(&RUN, args)?;
            Ok(Command::Run {
                state_dir: given.path_or("state-dir", DEFAULT_STATE_DIR),
                config: given.path("config"),
            })
        }
        Some("status") => {
            let mut given = options(&STATUS, args)?;
            Ok(Command::Status {
                state_dir: given.path_or("state-dir", DEFAULT_STATE_DIR),
            })
        }
        _ if first.as_bytes().starts_with(b"-") => Err(top_error(&format!(
            "unexpected argument '{}' found",
            first.to_string_lossy()
        ))),
        _ => Err(top_error(&format!(
            "unrecognized subcommand '{}'",
            first.to_string_lossy()
        ))),
    }
}

fn register(mut given: Given) -> Result<Command, Exit> {
    let server = given.text("server");
    let token = match (given.text("token"), given.path("token-file")) {
        (Some(_), Some(_)) => {
            return Err(error(
                &REGISTER,
                "the argument '--token <TOKEN>' cannot be used with '--token-file <FILE>'",
            ))
        }
        (Some(token), None) => Some(TokenSource::Arg(token)),
        (None, Some(path)) => Some(TokenSource::File(path)),
        (None, None) => None,
    };
    let (server, token) = match (server, token) {
        (Some(server), Some(token)) => (server, token),
        (server, token) => {
            let mut missing = Vec::new();
            if server.is_none() {
                missing.push("--server <URL>");
            }
            if token.is_none() {
                missing.push("--token <TOKEN> (or --token-file <FILE>)");
            }
            return Err(error(
                &REGISTER,
                &format!(
                    "the following required arguments were not provided: {}",
                    missing.join(" and ")
                ),
            ));
        }
    };
    Ok(Command::Register {
        server,
        token,
        state_dir: given.path_or("state-dir", DEFAULT_STATE_DIR),
        hostname: given.text("hostname"),
        no_pqc: given.flag("no-pqc"),
        force: given.flag("force"),
    })
}

/// `help [COMMAND]`: the top-level help, or one subcommand's.
fn help_command(mut args: impl Iterator<Item = OsString>) -> Exit {
    let Some(name) = args.next() else {
        return Exit::Print(top_help());
    };
    let text = match name.to_str() {
        Some("help") => format!(
            "{HELP_ABOUT}\n\nUsage: {BIN} help [COMMAND]\n\nArguments:\n  [COMMAND]  Print help for the subcommand\n"
        ),
        n => match SUBS.iter().find(|s| Some(s.name) == n) {
            Some(sub) => sub_help(sub),
            None => {
                return top_error(&format!(
                    "unrecognized subcommand '{}'",
                    name.to_string_lossy()
                ))
            }
        },
    };
    match args.next() {
        None => Exit::Print(text),
        Some(extra) => top_error(&format!(
            "unrecognized subcommand '{}'",
            extra.to_string_lossy()
        )),
    }
}

/// An option's value, as its [`Kind`] says.
enum Value {
    Flag,
    Text(String),
    Path(PathBuf),
}

/// The options given to a subcommand, each at most once.
struct Given(Vec<(&'static str, Value)>);

impl Given {
    fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.swap_remove(i).1)
    }

    fn text(&mut self, name: &str) -> Option<String> {
        match self.take(name)? {
            Value::Text(s) => Some(s),
            Value::Flag | Value::Path(_) => None,
        }
    }

    fn path(&mut self, name: &str) -> Option<PathBuf> {
        match self.take(name)? {
            Value::Path(p) => Some(p),
            Value::Flag | Value::Text(_) => None,
        }
    }

    fn path_or(&mut self, name: &str, default: &str) -> PathBuf {
        self.path(name).unwrap_or_else(|| PathBuf::from(default))
    }

    fn flag(&mut self, name: &str) -> bool {
        self.take(name).is_some()
    }
}

/// Reads `sub`'s options, in order: the first mistake, or `-h`/`--help`, ends it.
fn options(sub: &Sub, mut args: impl Iterator<Item = OsString>) -> Result<Given, Exit> {
    let mut given = Given(Vec::new());
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if bytes == b"-h" || bytes == b"--help" {
            return Err(Exit::Print(sub_help(sub)));
        }
        if bytes == b"--" {
            // What follows is positional, and no subcommand takes positionals.
            return match args.next() {
                Some(bare) => Err(bare_argument(sub, &bare)),
                None => Ok(given),
            };
        }
        let Some(long) = bytes.strip_prefix(b"--") else {
            if bytes.len() > 1 && bytes.starts_with(b"-") {
                return Err(error(
                    sub,
                    &format!("unexpected argument '{}' found", arg.to_string_lossy()),
                ));
            }
            return Err(bare_argument(sub, &arg));
        };
        let (name, inline) = match long.iter().position(|&b| b == b'=') {
            Some(i) => (&long[..i], Some(OsStr::from_bytes(&long[i + 1..]))),
            None => (long, None),
        };
        let Some(opt) = sub.opts.iter().find(|o| o.name.as_bytes() == name) else {
            // Only the name: an `=value` may be a token under a mistyped name.
            return Err(error(
                sub,
                &format!(
                    "unexpected argument '--{}' found",
                    String::from_utf8_lossy(name)
                ),
            ));
        };
        if given.0.iter().any(|(n, _)| *n == opt.name) {
            return Err(error(
                sub,
                &format!(
                    "the argument '{}' cannot be used multiple times",
                    opt.display()
                ),
            ));
        }
        let value = match opt.kind {
            Kind::Flag if inline.is_some() => {
                return Err(error(
                    sub,
                    &format!("the argument '{}' takes no value", opt.display()),
                ))
            }
            Kind::Flag => Value::Flag,
            Kind::Text(_) => {
                let value = value_of(sub, opt, inline, &mut args)?;
                Value::Text(value.into_string().map_err(|_| {
                    error(
                        sub,
                        &format!("the value of '{}' is not valid UTF-8", opt.display()),
                    )
                })?)
            }
            Kind::Path(_) => match value_of(sub, opt, inline, &mut args)? {
                v if v.is_empty() => return Err(missing_value(sub, opt)),
                v => Value::Path(v.into()),
            },
        };
        given.0.push((opt.name, value));
    }
    Ok(given)
}

/// The value after `--name=`, or else the next argument unless it is an option.
fn value_of(
    sub: &Sub,
    opt: &Opt,
    inline: Option<&OsStr>,
    args: &mut impl Iterator<Item = OsString>,
) -> Result<OsString, Exit> {
    if let Some(v) = inline {
        return Ok(v.to_os_string());
    }
    match args.next() {
        Some(v) if !(v.len() > 1 && v.as_bytes().starts_with(b"-")) => Ok(v),
        _ => Err(missing_value(sub, opt)),
    }
}

fn missing_value(sub: &Sub, opt: &Opt) -> Exit {
    error(
        sub,
        &format!(
            "a value is required for '{}' but none was supplied",
            opt.display()
        ),
    )
}

fn bare_argument(sub: &Sub, arg: &OsStr) -> Exit {
    if sub.quote_bare {
        error(
            sub,
            &format!("unexpected argument '{}' found", arg.to_string_lossy()),
        )
    } else {
        error(
            sub,
            &format!(
                "unexpected argument (not shown, in case it is a token): {} takes options only",
                sub.name
            ),
        )
    }
}

impl Opt {
    /// `--name` or `--name <VALUE>`, as help and errors show it.
    fn display(&self) -> String {
        match self.kind {
            Kind::Flag => format!("--{}", self.name),
            Kind::Text(v) | Kind::Path(v) => format!("--{} <{v}>", self.name),
        }
    }
}

fn error(sub: &Sub, message: &str) -> Exit {
    usage_error(sub.usage, message)
}

fn top_error(message: &str) -> Exit {
    usage_error("<COMMAND>", message)
}

fn usage_error(usage: &str, message: &str) -> Exit {
    Exit::Usage(format!(
        "error: {message}\n\nUsage: {BIN} {usage}\n\nFor more information, try '--help'.\n"
    ))
}

/// Rows of two columns, the first padded to the widest.
fn table(out: &mut String, rows: &[(String, &str)]) {
    let width = rows.iter().map(|(left, _)| left.len()).max().unwrap_or(0);
    for (left, right) in rows {
        let line = format!("  {left:<width$}  {right}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn top_help() -> String {
    let mut out = format!("{ABOUT}\n\nUsage: {BIN} <COMMAND>\n\nCommands:\n");
    let mut commands: Vec<(String, &str)> =
        SUBS.iter().map(|s| (s.name.to_string(), s.about)).collect();
    commands.push(("help".to_string(), HELP_ABOUT));
    table(&mut out, &commands);
    out.push_str("\nOptions:\n");
    table(
        &mut out,
        &[
            ("-h, --help".to_string(), "Print help"),
            ("-V, --version".to_string(), "Print version"),
        ],
    );
    out
}

fn sub_help(sub: &Sub) -> String {
    let mut out = format!("{}\n\nUsage: {BIN} {}\n\nOptions:\n", sub.about, sub.usage);
    let described: Vec<String> = sub
        .opts
        .iter()
        .map(|o| match o.default {
            Some(d) => format!("{} [default: {d}]", o.help),
            None => o.help.to_string(),
        })
        .collect();
    let mut rows: Vec<(String, &str)> = sub
        .opts
        .iter()
        .zip(&described)
        .map(|(o, d)| (format!("    {}", o.display()), d.as_str()))
        .collect();
    rows.push(("-h, --help".to_string(), "Print help"));
    table(&mut out, &rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, Exit> {
        parse(args.iter().map(OsString::from))
    }

    /// The error text for `args`, which must be bad usage.
    fn usage(args: &[&str]) -> String {
        match parse_strs(args) {
            Err(Exit::Usage(text)) => text,
            other => panic!("{args:?}: expected a usage error, got {other:?}"),
        }
    }

    /// The stdout text for `args`, which must be help or version.
    fn printed(args: &[&str]) -> String {
        match parse_strs(args) {
            Err(Exit::Print(text)) => text,
            other => panic!("{args:?}: expected help or version, got {other:?}"),
        }
    }

    /// Asserts `args` is bad usage, with `sentence` on the first line and then
    /// the usage line `usage`.
    fn refused(args: &[&str], sentence: &str, usage_line: &str) {
        let text = usage(args);
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(first, format!("error: {sentence}"), "{args:?}");
        assert!(
            text.contains(&format!("\nUsage: pilothouse-agent {usage_line}\n")),
            "{text}"
        );
        assert!(text.contains("try '--help'"), "{text}");
    }

    const TOKEN: &str = "pht1_0123456789abcdef0123456789abcdef_secret";

    fn registration(token: TokenSource) -> Command {
        Command::Register {
            server: "https://cp:8443".into(),
            token,
            state_dir: DEFAULT_STATE_DIR.into(),
            hostname: None,
            no_pqc: false,
            force: false,
        }
    }

    #[test]
    fn register_with_defaults() {
        assert_eq!(
            parse_strs(&["register", "--server", "https://cp:8443", "--token", TOKEN]),
            Ok(registration(TokenSource::Arg(TOKEN.into())))
        );
        assert_eq!(
            parse_strs(&[
                "register",
                "--token-file",
                "-",
                "--server",
                "https://cp:8443"
            ]),
            Ok(registration(TokenSource::File("-".into())))
        );
    }

    #[test]
    fn register_with_every_option_in_both_forms() {
        let want = Command::Register {
            server: "https://cp:8443".into(),
            token: TokenSource::File("/run/token".into()),
            state_dir: "/tmp/s".into(),
            hostname: Some("web-1".into()),
            no_pqc: true,
            force: true,
        };
        assert_eq!(
            parse_strs(&[
                "register",
                "--force",
                "--server",
                "https://cp:8443",
                "--token-file",
                "/run/token",
                "--no-pqc",
                "--state-dir",
                "/tmp/s",
                "--hostname",
                "web-1",
            ]),
            Ok(want.clone())
        );
        assert_eq!(
            parse_strs(&[
                "register",
                "--server=https://cp:8443",
                "--token-file=/run/token",
                "--state-dir=/tmp/s",
                "--hostname=web-1",
                "--no-pqc",
                "--force",
            ]),
            Ok(want)
        );
    }

    #[test]
    fn an_inline_value_is_taken_verbatim() {
        // Only the first `=` splits; a value may start with a dash or be empty.
        let Ok(Command::Register {
            server, hostname, ..
        }) = parse_strs(&[
            "register",
            "--server=https://cp:8443/?a=b",
            "--token=x",
            "--hostname=-dash",
        ])
        else {
            panic!("should parse");
        };
        assert_eq!(server, "https://cp:8443/?a=b");
        assert_eq!(hostname.as_deref(), Some("-dash"));
        let Ok(Command::Register { server, token, .. }) =
            parse_strs(&["register", "--server=", "--token="])
        else {
            panic!("should parse");
        };
        assert_eq!(server, "");
        assert_eq!(token, TokenSource::Arg(String::new()));
    }

    #[test]
    fn run_and_status_with_defaults_and_options() {
        assert_eq!(
            parse_strs(&["run"]),
            Ok(Command::Run {
                state_dir: DEFAULT_STATE_DIR.into(),
                config: None
            })
        );
        let want = Command::Run {
            state_dir: "/s".into(),
            config: Some("/c.toml".into()),
        };
        assert_eq!(
            parse_strs(&["run", "--config", "/c.toml", "--state-dir", "/s"]),
            Ok(want.clone())
        );
        assert_eq!(
            parse_strs(&["run", "--state-dir=/s", "--config=/c.toml"]),
            Ok(want)
        );
        assert_eq!(
            parse_strs(&["status"]),
            Ok(Command::Status {
                state_dir: DEFAULT_STATE_DIR.into()
            })
        );
        assert_eq!(
            parse_strs(&["status", "--state-dir=/s"]),
            Ok(Command::Status {
                state_dir: "/s".into()
            })
        );
        // A trailing `--` ends the options and adds nothing.
        assert_eq!(
            parse_strs(&["status", "--state-dir", "/s", "--"]),
            Ok(Command::Status {
                state_dir: "/s".into()
            })
        );
    }

    #[test]
    fn paths_may_be_any_bytes_and_text_must_be_utf8() {
        use std::os::unix::ffi::OsStringExt as _;
        let odd = OsString::from_vec(b"/tmp/\xff".to_vec());
        let mut inline = OsString::from("--state-dir=");
        inline.push(&odd);
        for args in [
            vec!["status".into(), "--state-dir".into(), odd.clone()],
            vec!["status".into(), inline],
        ] {
            assert_eq!(
                parse(args),
                Ok(Command::Status {
                    state_dir: odd.clone().into()
                })
            );
        }
        let args = [
            "register".into(),
            "--server".into(),
            "https://cp".into(),
            "--token-file".into(),
            odd.clone(),
            "--config".into(),
        ];
        // --config is not a register option: refused, after the path was taken.
        assert!(matches!(parse(args), Err(Exit::Usage(_))));
        for name in ["--server", "--token", "--hostname"] {
            let args = vec![
                OsString::from("register"),
                name.into(),
                OsString::from_vec(b"pht1_\xff".to_vec()),
            ];
            let Err(Exit::Usage(text)) = parse(args) else {
                panic!("{name}: non-UTF-8 text should be refused");
            };
            assert!(
                text.starts_with(&format!("error: the value of '{name} <")),
                "{text}"
            );
            assert!(text.contains("is not valid UTF-8"), "{text}");
            assert!(!text.contains("pht1_"), "{text}");
        }
        // A non-UTF-8 subcommand or option name is quoted lossily.
        let text = match parse([OsString::from_vec(b"x\xff".to_vec())]) {
            Err(Exit::Usage(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(
            text.starts_with("error: unrecognized subcommand 'x\u{fffd}'"),
            "{text}"
        );
        let text = match parse(["run".into(), OsString::from_vec(b"--\xff=1".to_vec())]) {
            Err(Exit::Usage(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(
            text.starts_with("error: unexpected argument '--\u{fffd}' found"),
            "{text}"
        );
    }

    #[test]
    fn no_arguments_is_the_top_level_usage_with_exit_2() {
        let e = parse(Vec::new()).unwrap_err();
        assert_eq!(e.code(), 2);
        let Exit::Usage(text) = e else {
            panic!("expected usage");
        };
        assert_eq!(text, top_help());
        assert!(text.contains("Usage: pilothouse-agent <COMMAND>"), "{text}");
        for sub in ["register", "run", "status"] {
            assert!(text.contains(&format!("\n  {sub} ")), "{text}");
        }
    }

    #[test]
    fn top_level_help_and_version() {
        let help = printed(&["--help"]);
        assert_eq!(printed(&["-h"]), help);
        assert_eq!(printed(&["help"]), help);
        // Anything after a top-level flag is not looked at.
        assert_eq!(printed(&["--help", "register"]), help);
        assert_eq!(
            help,
            "The Pilothouse agent: dials out to the control plane, runs the operations it signs and reports metrics.\n\
             \n\
             Usage: pilothouse-agent <COMMAND>\n\
             \n\
             Commands:\n\
             \x20 register  Register this server with a control plane, using a one-time token\n\
             \x20 run       Run the agent (normally started by systemd)\n\
             \x20 status    Show the registration, keys, certificate and last contact\n\
             \x20 help      Print this message or the help of the given subcommand(s)\n\
             \n\
             Options:\n\
             \x20 -h, --help     Print help\n\
             \x20 -V, --version  Print version\n"
        );
        let version = format!("pilothouse-agent {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(printed(&["--version"]), version);
        assert_eq!(printed(&["-V"]), version);
        assert_eq!(printed(&["-V", "run"]), version);
        assert_eq!(Exit::Print(version).code(), 0);
    }

    #[test]
    fn register_help_lists_every_option_and_warns_about_token() {
        let help = printed(&["register", "--help"]);
        assert_eq!(
            help,
            format!(
                "Register this server with a control plane, using a one-time token\n\
                 \n\
                 Usage: pilothouse-agent register [OPTIONS] --server <URL>\n\
                 \n\
                 Options:\n\
                 \x20     --server <URL>       The control plane's agent gateway, https://HOST:PORT\n\
                 \x20     --token <TOKEN>      The registration token from the dashboard (pht1_...). Visible to other users in `ps` while the command runs: prefer --token-file\n\
                 \x20     --token-file <FILE>  Read the registration token from this file, or from standard input with `-`\n\
                 \x20     --state-dir <DIR>    Where the agent keeps its keys and state [default: {DEFAULT_STATE_DIR}]\n\
                 \x20     --hostname <NAME>    The name to register under (default: the kernel's host name)\n\
                 \x20     --no-pqc             Register without a post-quantum (X-Wing) key: \"Classical fallback\"\n\
                 \x20     --force              Replace an existing registration\n\
                 \x20 -h, --help               Print help\n"
            )
        );
        // -h, `help register`, and help after other options (even a conflict or
        // a missing required option) all print the same page.
        assert_eq!(printed(&["register", "-h"]), help);
        assert_eq!(printed(&["help", "register"]), help);
        assert_eq!(
            printed(&["register", "--token", "x", "--token-file", "y", "--help"]),
            help
        );
        assert_eq!(printed(&["register", "--force", "-h", "--bogus"]), help);
    }

    #[test]
    fn run_and_status_help() {
        let run = printed(&["run", "--help"]);
        assert_eq!(
            run,
            format!(
                "Run the agent (normally started by systemd)\n\
                 \n\
                 Usage: pilothouse-agent run [OPTIONS]\n\
                 \n\
                 Options:\n\
                 \x20     --state-dir <DIR>  Where the agent keeps its keys and state [default: {DEFAULT_STATE_DIR}]\n\
                 \x20     --config <FILE>    Configuration file [default: /etc/pilothouse/agent.toml, if present]\n\
                 \x20 -h, --help             Print help\n"
            )
        );
        assert_eq!(printed(&["help", "run"]), run);
        assert_eq!(printed(&["run", "--state-dir", "/s", "-h"]), run);
        let status = printed(&["status", "-h"]);
        assert_eq!(
            status,
            format!(
                "Show the registration, keys, certificate and last contact\n\
                 \n\
                 Usage: pilothouse-agent status [OPTIONS]\n\
                 \n\
                 Options:\n\
                 \x20     --state-dir <DIR>  Where the agent keeps its keys and state [default: {DEFAULT_STATE_DIR}]\n\
                 \x20 -h, --help             Print help\n"
            )
        );
        assert_eq!(printed(&["help", "status"]), status);
        assert!(printed(&["help", "help"]).starts_with(HELP_ABOUT));
    }

    #[test]
    fn unknown_subcommands() {
        refused(
            &["frobnicate"],
            "unrecognized subcommand 'frobnicate'",
            "<COMMAND>",
        );
        refused(
            &["help", "frobnicate"],
            "unrecognized subcommand 'frobnicate'",
            "<COMMAND>",
        );
        refused(
            &["help", "register", "extra"],
            "unrecognized subcommand 'extra'",
            "<COMMAND>",
        );
        refused(
            &["--state-dir", "x"],
            "unexpected argument '--state-dir' found",
            "<COMMAND>",
        );
        refused(
            &["--", "run"],
            "unexpected argument '--' found",
            "<COMMAND>",
        );
    }

    #[test]
    fn missing_required_options() {
        let usage_line = "register [OPTIONS] --server <URL>";
        refused(
            &["register"],
            "the following required arguments were not provided: --server <URL> and --token <TOKEN> (or --token-file <FILE>)",
            usage_line,
        );
        refused(
            &["register", "--token", "x"],
            "the following required arguments were not provided: --server <URL>",
            usage_line,
        );
        refused(
            &["register", "--server", "https://cp"],
            "the following required arguments were not provided: --token <TOKEN> (or --token-file <FILE>)",
            usage_line,
        );
    }

    #[test]
    fn token_and_token_file_conflict_in_either_order_and_form() {
        for args in [
            [
                "register",
                "--server",
                "s",
                "--token",
                TOKEN,
                "--token-file",
                "-",
            ],
            [
                "register",
                "--token-file",
                "-",
                "--server",
                "s",
                "--token",
                TOKEN,
            ],
        ] {
            refused(
                &args,
                "the argument '--token <TOKEN>' cannot be used with '--token-file <FILE>'",
                "register [OPTIONS] --server <URL>",
            );
        }
        let token = format!("--token={TOKEN}");
        let text = usage(&["register", &token, "--token-file=f", "--server=s"]);
        assert!(text.contains("cannot be used with"), "{text}");
    }

    #[test]
    fn an_option_given_twice() {
        for (args, shown, usage_line) in [
            (
                &["register", "--server", "a", "--server=b"][..],
                "--server <URL>",
                "register [OPTIONS] --server <URL>",
            ),
            (
                &["register", "--force", "--force"],
                "--force",
                "register [OPTIONS] --server <URL>",
            ),
            (
                &["register", "--no-pqc", "--no-pqc"],
                "--no-pqc",
                "register [OPTIONS] --server <URL>",
            ),
            (
                &["run", "--config", "a", "--config", "b"],
                "--config <FILE>",
                "run [OPTIONS]",
            ),
            (
                &["status", "--state-dir=a", "--state-dir", "b"],
                "--state-dir <DIR>",
                "status [OPTIONS]",
            ),
        ] {
            refused(
                args,
                &format!("the argument '{shown}' cannot be used multiple times"),
                usage_line,
            );
        }
        // Even before a --help that comes later: options are read in order.
        refused(
            &["register", "--server", "a", "--server", "b", "--help"],
            "the argument '--server <URL>' cannot be used multiple times",
            "register [OPTIONS] --server <URL>",
        );
    }

    #[test]
    fn an_option_missing_its_value() {
        for (args, shown, usage_line) in [
            (
                &["register", "--server"][..],
                "--server <URL>",
                "register [OPTIONS] --server <URL>",
            ),
            // The next option is not taken as the value.
            (
                &["register", "--server", "--token", "x"],
                "--server <URL>",
                "register [OPTIONS] --server <URL>",
            ),
            (
                &["register", "--server", "s", "--hostname", "--help"],
                "--hostname <NAME>",
                "register [OPTIONS] --server <URL>",
            ),
            (
                &["register", "--server", "s", "--token", "-x"],
                "--token <TOKEN>",
                "register [OPTIONS] --server <URL>",
            ),
            (
                &["run", "--state-dir"],
                "--state-dir <DIR>",
                "run [OPTIONS]",
            ),
            // A path cannot be empty.
            (
                &["run", "--state-dir="],
                "--state-dir <DIR>",
                "run [OPTIONS]",
            ),
            (&["run", "--config", ""], "--config <FILE>", "run [OPTIONS]"),
            (
                &["register", "--server", "s", "--token-file="],
                "--token-file <FILE>",
                "register [OPTIONS] --server <URL>",
            ),
            (
                &["status", "--state-dir"],
                "--state-dir <DIR>",
                "status [OPTIONS]",
            ),
        ] {
            refused(
                args,
                &format!("a value is required for '{shown}' but none was supplied"),
                usage_line,
            );
        }
    }

    #[test]
    fn a_lone_dash_is_a_value() {
        assert_eq!(
            parse_strs(&["register", "--server", "https://cp:8443", "--token", "-"]),
            Ok(registration(TokenSource::Arg("-".into())))
        );
    }

    #[test]
    fn unknown_options() {
        for (args, shown, usage_line) in [
            (
                &["register", "--bogus"][..],
                "--bogus",
                "register [OPTIONS] --server <URL>",
            ),
            (
                &["register", "--tok", "x"],
                "--tok",
                "register [OPTIONS] --server <URL>",
            ),
            (&["run", "-x"], "-x", "run [OPTIONS]"),
            (&["run", "--version"], "--version", "run [OPTIONS]"),
            (&["run", "-V"], "-V", "run [OPTIONS]"),
            (&["status", "--config", "x"], "--config", "status [OPTIONS]"),
            (&["status", "--help=x"], "--help", "status [OPTIONS]"),
            // Options belong to their subcommand.
            (&["run", "--force"], "--force", "run [OPTIONS]"),
        ] {
            refused(
                args,
                &format!("unexpected argument '{shown}' found"),
                usage_line,
            );
        }
        // A mistake comes before a later --help.
        refused(
            &["register", "--bogus", "--help"],
            "unexpected argument '--bogus' found",
            "register [OPTIONS] --server <URL>",
        );
    }

    #[test]
    fn a_flag_with_a_value() {
        for flag in ["no-pqc", "force"] {
            refused(
                &[
                    "register",
                    "--server",
                    "s",
                    "--token",
                    "x",
                    &format!("--{flag}=x"),
                ],
                &format!("the argument '--{flag}' takes no value"),
                "register [OPTIONS] --server <URL>",
            );
        }
        refused(
            &["register", "--no-pqc=", "--server", "s", "--token", "x"],
            "the argument '--no-pqc' takes no value",
            "register [OPTIONS] --server <URL>",
        );
    }

    #[test]
    fn stray_positional_arguments() {
        refused(
            &["run", "extra"],
            "unexpected argument 'extra' found",
            "run [OPTIONS]",
        );
        refused(
            &["status", "--", "extra"],
            "unexpected argument 'extra' found",
            "status [OPTIONS]",
        );
        refused(
            &["run", "--state-dir", "/s", "-"],
            "unexpected argument '-' found",
            "run [OPTIONS]",
        );
        refused(
            &["register", "--server", "s", "--token", "x", "extra"],
            "unexpected argument (not shown, in case it is a token): register takes options only",
            "register [OPTIONS] --server <URL>",
        );
    }

    #[test]
    fn no_error_echoes_a_token() {
        let inline = format!("--token={TOKEN}");
        let mistyped = format!("--tokne={TOKEN}");
        let cases: [&[&str]; 10] = [
            &["register", "--token", TOKEN],
            &[
                "register",
                "--token",
                TOKEN,
                "--token-file",
                "f",
                "--server",
                "s",
            ],
            &[
                "register", "--token", TOKEN, "--token", TOKEN, "--server", "s",
            ],
            &["register", &inline, &inline],
            &["register", &inline, "--bogus"],
            &["register", &mistyped, "--server", "s"],
            &["register", "--server", "s", TOKEN],
            &["register", "--server", "s", "--", TOKEN],
            &["register", "--server", "s", "--token=", TOKEN],
            &["register", &inline, "--no-pqc=1"],
        ];
        for args in cases {
            let text = usage(args);
            assert!(!text.contains(TOKEN), "{args:?}: {text}");
            assert!(!text.contains("secret"), "{args:?}: {text}");
        }
        let parsed = parse_strs(&["register", "--server", "s", "--token", TOKEN]);
        assert!(!format!("{parsed:?}").contains(TOKEN));
    }

    #[test]
    fn every_error_is_one_sentence_then_usage_and_a_hint() {
        let text = usage(&["register", "--bogus"]);
        assert_eq!(
            text,
            "error: unexpected argument '--bogus' found\n\
             \n\
             Usage: pilothouse-agent register [OPTIONS] --server <URL>\n\
             \n\
             For more information, try '--help'.\n"
        );
        assert_eq!(Exit::Usage(text).code(), 2);
    }
}
