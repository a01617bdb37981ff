//! The interactive shell (`tpc client`) and the command parser it shares with the
//! one-shot mode.
//!
//! Commands are case-insensitive: `get KEY` (`get -v KEY` also prints its version),
//! `put KEY VALUE`, `del KEY` (or `delete`), `help`, `exit`. Words are split on spaces; quote a key or value that has spaces with
//! `"..."` (escapes `\"`, `\\`, `\n`, `\t`) or `'...'` (taken literally).

use std::path::PathBuf;

use rustyline::error::ReadlineError;

use super::{describe, Client};

/// A parsed shell command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `get KEY`, or `get -v KEY` to print the version too.
    Get { key: String, with_version: bool },
    /// `put KEY VALUE`
    Put(String, String),
    /// `del KEY`
    Delete(String),
    /// `help`
    Help,
    /// `exit` or `quit`
    Exit,
    /// An empty line.
    Nothing,
}

/// The shell's help text.
pub const HELP: &str = "\
commands (any case):
  get KEY          print the value of KEY
  get -v KEY       the value, then its version (the transaction that last wrote it)
  put KEY VALUE    set KEY to VALUE on every follower
  del KEY          delete KEY (also: delete)
  help             this text
  exit             leave (also: quit, Ctrl-D)
quote keys or values with spaces: put \"my key\" \"a value\"  (escapes: \\\" \\\\ \\n \\t)";

/// Splits a line into words, honouring quotes.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
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
        if chars.peek().is_some_and(|c| !c.is_whitespace()) {
            return Err("a quoted word must be followed by a space".into());
        }
        words.push(word);
    }
}

/// Parses one shell line.
pub fn parse(line: &str) -> Result<Command, String> {
    let words = split_words(line)?;
    let Some((verb, args)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    let verb = verb.to_lowercase();
    let arity = |n: usize, usage: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("usage: {usage} (quote words that have spaces)"))
        }
    };
    match verb.as_str() {
        "get" => match args {
            [flag, key] if flag == "-v" => Ok(Command::Get {
                key: key.clone(),
                with_version: true,
            }),
            _ => arity(1, "get [-v] KEY").map(|_| Command::Get {
                key: args[0].clone(),
                with_version: false,
            }),
        },
        "put" | "set" => {
            arity(2, "put KEY VALUE").map(|_| Command::Put(args[0].clone(), args[1].clone()))
        }
        "del" | "delete" | "rm" => arity(1, "del KEY").map(|_| Command::Delete(args[0].clone())),
        "help" | "?" => Ok(Command::Help),
        "exit" | "quit" => Ok(Command::Exit),
        other => Err(format!("unknown command {other:?}; type help")),
    }
}

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
        Command::Help => Ok(HELP.to_string()),
        Command::Exit | Command::Nothing => Ok(String::new()),
    }
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".tpc_history"))
}

/// The interactive loop: reads lines with history and editing until `exit` or Ctrl-D.
pub async fn interactive(mut client: Client, leader: &str) -> Result<(), String> {
    let mut editor = rustyline::DefaultEditor::new().map_err(|e| format!("terminal: {e}"))?;
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("tpc shell, leader {leader}. Type help for commands, exit or Ctrl-D to leave.");
    loop {
        let line = match editor.readline("tpc> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("terminal: {e}")),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        match parse(&line) {
            Ok(Command::Exit) => break,
            Ok(Command::Nothing) => {}
            Ok(command) => match run(&mut client, command).await {
                Ok(text) => println!("{text}"),
                Err(error) => println!("error: {error}"),
            },
            Err(error) => println!("error: {error}"),
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
        assert_eq!(parse("get '-v'"), Ok(get("-v", false)), "a key named -v");
        assert_eq!(parse("Put k v"), Ok(Command::Put("k".into(), "v".into())));
        assert_eq!(parse("del k"), Ok(Command::Delete("k".into())));
        assert_eq!(parse("DELETE k"), Ok(Command::Delete("k".into())));
        assert_eq!(parse("  "), Ok(Command::Nothing));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("quit"), Ok(Command::Exit));
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
    fn bad_lines_get_clear_errors() {
        assert!(parse("put k").unwrap_err().contains("usage: put KEY VALUE"));
        assert!(parse("get -v").is_ok_and(|c| c
            == Command::Get {
                key: "-v".into(),
                with_version: false
            }));
        assert!(parse("get -x k")
            .unwrap_err()
            .contains("usage: get [-v] KEY"));
        assert!(parse("put k v w").unwrap_err().contains("quote"));
        assert!(parse("frobnicate").unwrap_err().contains("unknown command"));
        assert!(parse("get \"k").unwrap_err().contains("unterminated"));
        assert!(parse("get \"k\"x").is_err());
    }
}
