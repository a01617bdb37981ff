//! The interactive shell (`tpc client`) and the command parser it shares with the
//! one-shot mode.
//!
//! Commands and flags are case-insensitive: `get KEY` (`get -v KEY` also prints its
//! version), `put KEY VALUE`, `del KEY` (or `delete`), the transactions of DESIGN §6 (`cas
//! KEY EXPECTED NEW`, `mput K1 V1 [K2 V2]...`, `mdel K1 [K2]...`, and `txn` with the syntax of
//! `txn_syntax.rs`), `help`, `exit`. Words are split on spaces; quote a key or value
//! that has spaces with `"..."` (escapes `\"`, `\\`, `\n`, `\t`) or `'...'` (taken
//! literally).

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

use rustyline::error::ReadlineError;

use super::output::print_line;
use super::txn_syntax::{argument_words, parse_txn, Word, TXN_USAGE};
use super::{describe, Client, Swap, Txn};
use crate::limits::quote_key;
use crate::proto::api;

/// A parsed shell command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `get KEY`, or `get -v KEY` to print the version too.
    Get { key: String, with_version: bool },
    /// `put KEY VALUE`
    Put(String, String),
    /// `del KEY`
    Delete(String),
    /// `cas KEY EXPECTED NEW`: set KEY to NEW if its value is EXPECTED.
    Cas {
        key: String,
        expected: String,
        new: String,
    },
    /// `mput K1 V1 K2 V2 ...`: all in one transaction.
    Mput(Vec<(String, String)>),
    /// `mdel K1 K2 ...`: all in one transaction.
    Mdel(Vec<String>),
    /// `txn ...` (see `txn_syntax.rs`).
    Txn(Txn),
    /// `help`
    Help,
    /// `exit` or `quit`
    Exit,
    /// An empty line.
    Nothing,
}

/// The shell's help text.
pub fn help() -> String {
    format!(
        "\
commands (any case, and their flags too):
  get KEY          print the value of KEY
  get -v KEY       the value, then its version (the transaction that last wrote it)
  put KEY VALUE    set KEY to VALUE on every follower
  del KEY          delete KEY (also: delete)
  cas KEY OLD NEW  set KEY to NEW only if its value is OLD, atomically
  mput K1 V1 [K2 V2]...  set one key or more in one transaction (each key once)
  mdel K1 [K2]...  delete one key or more in one transaction (each key once)
  {TXN_USAGE}
                   a transaction: if every COND holds, the ops after then, else those
                   after else; atomic on every follower; e.g.
                   txn if a = 1 and b exists then put a 2, del b else get a
                   a comma ends an op, alone or at the end of a word; quote a
                   value that ends with one: txn put a \"x,\", put b \"\"
  help             this text
  exit             leave (also: quit, Ctrl-D)
quote keys or values with spaces: put \"my key\" \"a value\"  (escapes: \\\" \\\\ \\n \\t);
\"\" is the empty value"
    )
}

/// Splits a line into words, honouring quotes.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    Ok(split_quoted(line, false)?
        .into_iter()
        .map(|w| w.text)
        .collect())
}

/// Splits a line into words, saying which were quoted. A quoted word must be followed
/// by a space or the end of the line, or, if `commas_end_ops` (a `txn`), by the commas
/// that end an op: they become a word of their own.
fn split_quoted(line: &str, commas_end_ops: bool) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        let quoted = first == '"' || first == '\'';
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated \"quote\"".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some(c @ ('"' | '\\')) => word.push(c),
                        Some(c) => return Err(format!("unknown escape \\{c}")),
                        None => return Err("unterminated \"quote\"".into()),
                    },
                    Some(c) => word.push(c),
                }
            }
        } else if first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated 'quote'".into()),
                    Some('\'') => break,
                    Some(c) => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(Word { text: word, quoted });
        let mut commas = String::new();
        while commas_end_ops && chars.peek() == Some(&',') {
            commas.push(',');
            chars.next();
        }
        if chars.peek().is_some_and(|c| !c.is_whitespace()) {
            return Err(if commas_end_ops {
                "a quoted word must be followed by a space or a comma".into()
            } else {
                "a quoted word must be followed by a space".into()
            });
        }
        if !commas.is_empty() {
            words.push(Word {
                text: commas,
                quoted: false,
            });
        }
    }
}

/// Parses one shell line.
pub fn parse(line: &str) -> Result<Command, String> {
    let words = split_quoted(line, true)?;
    let Some((verb, rest)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    if !verb.text.eq_ignore_ascii_case("txn") {
        // Commas end ops in a txn only: elsewhere `"a",` is a mistake, said as such.
        split_quoted(line, false)?;
    }
    parse_words(&verb.text, rest)
}

/// Parses a command given as words: the one-shot mode's arguments, which the shell that
/// ran `tpc` has split and unquoted already (see `txn_syntax::argument_words`).
pub fn parse_args(verb: &str, args: &[String]) -> Result<Command, String> {
    let words: Vec<Word> = if verb.eq_ignore_ascii_case("txn") {
        argument_words(args)
    } else {
        args.iter()
            .map(|text| Word {
                text: text.clone(),
                quoted: false,
            })
            .collect()
    };
    parse_words(verb, &words)
}

fn parse_words(verb: &str, words: &[Word]) -> Result<Command, String> {
    let args: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
    let args = args.as_slice();
    let verb = verb.to_lowercase();
    let usage = |usage: &str| format!("usage: {usage} (quote words that have spaces)");
    let arity = |n: usize, text: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(usage(text))
        }
    };
    match verb.as_str() {
        "get" => {
            // A flag only unquoted: `get '-v'` reads the key -v.
            let is_flag = |word: &Word| !word.quoted && word.text.eq_ignore_ascii_case("-v");
            match words {
                [flag, key] if is_flag(flag) => Ok(Command::Get {
                    key: key.text.clone(),
                    with_version: true,
                }),
                [key] if !is_flag(key) => Ok(Command::Get {
                    key: key.text.clone(),
                    with_version: false,
                }),
                _ => Err(usage("get [-v] KEY")),
            }
        }
        "put" | "set" => {
            arity(2, "put KEY VALUE").map(|_| Command::Put(args[0].clone(), args[1].clone()))
        }
        "del" | "delete" | "rm" => arity(1, "del KEY").map(|_| Command::Delete(args[0].clone())),
        "cas" => arity(3, "cas KEY EXPECTED NEW").map(|_| Command::Cas {
            key: args[0].clone(),
            expected: args[1].clone(),
            new: args[2].clone(),
        }),
        "mput" => {
            if args.is_empty() || !args.len().is_multiple_of(2) {
                return Err("usage: mput K1 V1 [K2 V2]... (pairs of key and value)".into());
            }
            no_key_twice(args.iter().step_by(2))?;
            Ok(Command::Mput(
                args.chunks(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
            ))
        }
        "mdel" => {
            if args.is_empty() {
                return Err("usage: mdel K1 [K2]...".into());
            }
            no_key_twice(args.iter())?;
            Ok(Command::Mdel(args.to_vec()))
        }
        "txn" => parse_txn(words).map(Command::Txn),
        "help" | "?" => Ok(Command::Help),
        "exit" | "quit" => Ok(Command::Exit),
        other => Err(format!("unknown command {other:?}; type help")),
    }
}

/// `mput` and `mdel` write each key once (a transaction may write a key once per
/// branch): the error names a key given twice.
fn no_key_twice<'a>(keys: impl Iterator<Item = &'a String>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for key in keys {
        if !seen.insert(key) {
            return Err(format!("key {} appears twice", quote_key(key)));
        }
    }
    Ok(())
}

/// What the shell prints when `cas` did not swap (one-shot mode exits with 1).
pub const NOT_SWAPPED: &str = "not swapped";

/// Runs one command; the text to print on success, or the error line.
pub async fn run(client: &mut Client, command: Command) -> Result<String, String> {
    let done = |r: Result<(), tonic::Status>| r.map(|_| "OK".to_string()).map_err(|s| describe(&s));
    match command {
        Command::Get {
            key,
            with_version: false,
        } => client.get(&key).await.map_err(|s| describe(&s)),
        Command::Get {
            key,
            with_version: true,
        } => client
            .get_versioned(&key)
            .await
            .map(|(value, version)| format!("{value}\nversion {version}"))
            .map_err(|s| describe(&s)),
        Command::Put(key, value) => done(client.put(&key, &value).await),
        Command::Delete(key) => done(client.delete(&key).await),
        Command::Cas { key, expected, new } => {
            match client.cas(&key, Some(&expected), &new).await {
                Ok(Swap::Done(_)) => Ok("OK".to_string()),
                Ok(Swap::Refused(Some((value, version)))) => Err(format!(
                    "{NOT_SWAPPED}: {key:?} is {value:?} (version {version})"
                )),
                Ok(Swap::Refused(None)) => Err(format!("{NOT_SWAPPED}: {key:?} is absent")),
                Err(status) => Err(describe(&status)),
            }
        }
        Command::Mput(pairs) => {
            let txn = pairs
                .iter()
                .fold(Txn::new(), |txn, (key, value)| txn.then_put(key, value));
            done(client.txn(txn).await.map(|_| ()))
        }
        Command::Mdel(keys) => {
            let txn = keys
                .iter()
                .fold(Txn::new(), |txn, key| txn.then_delete(key));
            done(client.txn(txn).await.map(|_| ()))
        }
        Command::Txn(txn) => client
            .txn(txn)
            .await
            .map(|answer| describe_txn(&answer))
            .map_err(|s| describe(&s)),
        Command::Help => Ok(help()),
        Command::Exit | Command::Nothing => Ok(String::new()),
    }
}

/// A transaction's answer, one line each: the branch that ran, every GET's result, the
/// version it wrote.
pub fn describe_txn(answer: &api::TxnResponse) -> String {
    let mut lines = vec![if answer.succeeded {
        "succeeded: the then branch ran".to_string()
    } else {
        "compares failed: the else branch ran".to_string()
    }];
    for read in &answer.results {
        lines.push(if read.found {
            format!(
                "get {:?}: {:?} (version {})",
                read.key, read.value, read.version
            )
        } else {
            format!("get {:?}: not found", read.key)
        });
    }
    if !answer.version.is_empty() {
        lines.push(format!("version {}", answer.version));
    }
    lines.join("\n")
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".tpc_history"))
}

/// The interactive loop: reads lines with history and editing until `exit` or Ctrl-D.
/// An error is the terminal's, or stdout's (a closed pipe: the loop ends there).
///
/// `leader` is the one of `leaders` the client talks to. With standby leaders, a call
/// answered UNAVAILABLE (not applied: the leader may be gone, or a new one is being
/// elected) or not answered in time makes the shell ask the leaders again which is
/// active, so that the next command goes to it; the command itself is not repeated
/// (a write not answered in time may have been applied).
pub async fn interactive(
    mut client: Client,
    leader: &str,
    leaders: &[String],
    timeout: std::time::Duration,
) -> io::Result<()> {
    let mut leader = leader.to_string();
    let terminal = |e: ReadlineError| io::Error::other(format!("terminal: {e}"));
    let mut editor = rustyline::DefaultEditor::new().map_err(terminal)?;
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    print_line(&format!(
        "tpc shell, leader {leader}. Type help for commands, exit or Ctrl-D to leave."
    ))?;
    loop {
        let line = match editor.readline("tpc> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(terminal(e)),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        match parse(&line) {
            Ok(Command::Exit) => break,
            Ok(Command::Nothing) => {}
            Ok(command) => match run(&mut client, command).await {
                Ok(text) => print_line(&text)?,
                Err(error) => {
                    print_line(&format!("error: {error}"))?;
                    let gone = ["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"];
                    if leaders.len() > 1 && gone.iter().any(|code| error.starts_with(code)) {
                        if let Ok(active) = super::resolve_leader(leaders, timeout).await {
                            if active != leader {
                                if let Ok(next) = Client::new(&active, timeout) {
                                    print_line(&format!(
                                        "(the active leader is now {active}; retry)"
                                    ))?;
                                    client = next;
                                    leader = active;
                                }
                            }
                        }
                    }
                }
            },
            Err(error) => print_line(&format!("error: {error}"))?,
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_in_any_case() {
        let get = |key: &str, with_version| Command::Get {
            key: key.into(),
            with_version,
        };
        assert_eq!(parse("GET k"), Ok(get("k", false)));
        assert_eq!(parse("get -v k"), Ok(get("k", true)));
        assert_eq!(
            parse("GET -V k"),
            Ok(get("k", true)),
            "flags in any case too"
        );
        assert_eq!(parse("get '-v'"), Ok(get("-v", false)), "a key named -v");
        assert_eq!(parse("Put k v"), Ok(Command::Put("k".into(), "v".into())));
        assert_eq!(parse("del k"), Ok(Command::Delete("k".into())));
        assert_eq!(parse("DELETE k"), Ok(Command::Delete("k".into())));
        assert_eq!(parse("  "), Ok(Command::Nothing));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("quit"), Ok(Command::Exit));
    }

    #[test]
    fn transaction_commands_parse() {
        assert_eq!(
            parse("cas k 1 2"),
            Ok(Command::Cas {
                key: "k".into(),
                expected: "1".into(),
                new: "2".into()
            })
        );
        assert_eq!(
            parse("MPUT a 1 'b c' 2"),
            Ok(Command::Mput(vec![
                ("a".into(), "1".into()),
                ("b c".into(), "2".into())
            ]))
        );
        assert_eq!(
            parse("mdel a b"),
            Ok(Command::Mdel(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            parse("txn if a = 1 then put 'else' x"),
            Ok(Command::Txn(
                Txn::new().if_value("a", "1").then_put("else", "x")
            )),
            "a quoted word is a key, not a keyword"
        );
        assert_eq!(
            parse_args("txn", &["put".into(), "else".into(), "x".into()]),
            Ok(Command::Txn(Txn::new().then_put("else", "x"))),
            "one-shot words: a keyword only where the grammar expects one"
        );
        assert!(parse("mput a 1 b").unwrap_err().contains("pairs"));
        assert!(parse("mdel").unwrap_err().contains("usage: mdel"));
        assert!(parse("cas k 1").unwrap_err().contains("usage: cas"));
        assert!(parse("txn if a").unwrap_err().contains("usage: txn"));
    }

    #[test]
    fn a_transactions_answer_is_described_line_by_line() {
        let answer = api::TxnResponse {
            succeeded: false,
            results: vec![
                api::TxnResult {
                    key: "a".into(),
                    found: true,
                    value: "1".into(),
                    version: "2.3".into(),
                },
                api::TxnResult {
                    key: "b".into(),
                    ..Default::default()
                },
            ],
            version: String::new(),
        };
        assert_eq!(
            describe_txn(&answer),
            "compares failed: the else branch ran\nget \"a\": \"1\" (version 2.3)\nget \"b\": not found"
        );
    }

    #[test]
    fn quotes_allow_spaces_and_escapes() {
        assert_eq!(
            parse(r#"put "my key" "a \"b\"\n""#),
            Ok(Command::Put("my key".into(), "a \"b\"\n".into()))
        );
        assert_eq!(
            parse("put k ''"),
            Ok(Command::Put("k".into(), String::new()))
        );
        assert_eq!(
            parse(r"put 'a\b' x"),
            Ok(Command::Put(r"a\b".into(), "x".into()))
        );
    }

    #[test]
    fn in_a_transaction_a_quoted_word_may_end_an_op_and_be_empty() {
        assert_eq!(
            parse(r#"txn put a "x", put 'b' '', del "c",get d"#).unwrap_err(),
            "a quoted word must be followed by a space or a comma"
        );
        assert_eq!(
            parse(r#"txn put a "x", put 'b' '', del "c",, get d"#)
                .unwrap_err()
                .split('\n')
                .next(),
            Some("expected get, put or del, found a comma")
        );
        assert_eq!(
            parse(r#"txn if "a," = "" then put a "x,", put 'b' '' else del "c", get "d""#),
            Ok(Command::Txn(
                Txn::new()
                    .if_value("a,", "")
                    .then_put("a", "x,")
                    .then_put("b", "")
                    .else_delete("c")
                    .else_get("d")
            ))
        );
        assert_eq!(
            parse(r#"mdel "a", b"#).unwrap_err(),
            "a quoted word must be followed by a space",
            "a comma after a quote ends a txn op only"
        );
    }

    #[test]
    fn bad_lines_get_clear_errors() {
        assert!(parse("put k").unwrap_err().contains("usage: put KEY VALUE"));
        assert!(parse("get -v").unwrap_err().contains("usage: get [-v] KEY"));
        assert!(parse("get -v a b")
            .unwrap_err()
            .contains("usage: get [-v] KEY"));
        assert_eq!(
            parse("mput a 1 b 2 a 3").unwrap_err(),
            "key \"a\" appears twice"
        );
        assert_eq!(parse("MDEL a b b").unwrap_err(), "key \"b\" appears twice");
        assert_eq!(
            parse_args("mdel", &["k".into(), "k".into()]).unwrap_err(),
            "key \"k\" appears twice"
        );
        assert!(parse("get -x k")
            .unwrap_err()
            .contains("usage: get [-v] KEY"));
        assert!(parse("put k v w").unwrap_err().contains("quote"));
        assert!(parse("frobnicate").unwrap_err().contains("unknown command"));
        assert!(parse("get \"k").unwrap_err().contains("unterminated"));
        assert!(parse("get \"k\"x").is_err());
    }
}
