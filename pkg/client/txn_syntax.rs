//! The shell's `txn` syntax, a small language for DESIGN §6's transactions:
//!
//! ```text
//! txn [if COND [and COND]...] then OP[, OP]... [else OP[, OP]...]
//! COND: KEY = VALUE | KEY != VALUE | KEY exists | KEY missing
//!       | KEY version = E.S | KEY version != E.S
//! OP:   get KEY | put KEY VALUE | del KEY
//! ```
//!
//! For example `txn if a = 1 and b exists then put a 2, del b else get a`. Keywords
//! (`if`, `and`, `then`, `else`, the ops and the comparisons) are recognised only where
//! the grammar expects one, and never in a quoted word; a comma ends an op, alone, at
//! the end of an unquoted word, or right after a quoted one (`put a "x", put b y`);
//! quote a value that ends with a comma. `""` is the empty value.
//!
//! One-shot mode (`tpc client txn ...`) has no quotes of its own: the shell that ran it
//! has split the line already, so each argument is one word as it stands (spaces,
//! quotes and commas in it are data; an empty argument is the empty value). Its commas
//! that end an op are those of [`argument_words`].

use super::Txn;

/// The syntax, for usage messages and `help`.
pub const TXN_USAGE: &str = "txn [if COND [and COND]...] then OP[, OP]... [else OP[, OP]...]
      COND: KEY = VALUE | KEY != VALUE | KEY exists | KEY missing
            | KEY version = E.S | KEY version != E.S
      OP:   get KEY | put KEY VALUE | del KEY";

/// One word of a command line, and whether it was quoted (then it is never a keyword,
/// and a comma at its end is part of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub quoted: bool,
}

/// The words of a one-shot `txn`, one per argument. A comma that ends an argument
/// separates two ops when the next argument starts one (`get`, `put` or `del`), as in
/// `put a 1, put b 2`; any other comma is data: a value that ends with a comma is
/// written `put k "x,"` as the last op, or `put k "x," , put j y` before another (a
/// comma of its own always separates).
pub fn argument_words(args: &[String]) -> Vec<Word> {
    let starts_op = |arg: &String| {
        ["get", "put", "set", "del", "delete"]
            .iter()
            .any(|op| arg.eq_ignore_ascii_case(op))
    };
    args.iter()
        .enumerate()
        .map(|(i, arg)| {
            let comma_is_data = arg.ends_with(',')
                && !arg.trim_end_matches(',').is_empty()
                && !args.get(i + 1).is_some_and(starts_op);
            // Marked quoted to keep its commas: ending with one, it is no keyword anyway.
            Word {
                text: arg.clone(),
                quoted: comma_is_data,
            }
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(Word),
    Comma,
}

impl Token {
    /// True if this is the unquoted keyword `keyword` (any case).
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if !w.quoted && w.text.eq_ignore_ascii_case(keyword))
    }
}

/// Splits the commas off unquoted words.
fn tokens(words: &[Word]) -> Vec<Token> {
    let mut tokens = Vec::new();
    for word in words {
        if word.quoted {
            tokens.push(Token::Word(word.clone()));
            continue;
        }
        let text = word.text.as_str();
        let stripped = text.trim_end_matches(',');
        if !stripped.is_empty() || text.is_empty() {
            tokens.push(Token::Word(Word {
                text: stripped.to_string(),
                quoted: false,
            }));
        }
        for _ in stripped.len()..text.len() {
            tokens.push(Token::Comma);
        }
    }
    tokens
}

/// Reads tokens left to right.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, keyword: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.is(keyword));
        if found {
            self.at += 1;
        }
        found
    }

    /// The next word (a key or value), whatever it says.
    fn word(&mut self, what: &str) -> Result<String, String> {
        match self.tokens.get(self.at) {
            Some(Token::Word(word)) => {
                self.at += 1;
                Ok(word.text.clone())
            }
            Some(Token::Comma) => Err(format!("expected {what}, found a comma")),
            None => Err(format!("expected {what}, found the end of the line")),
        }
    }

    fn condition(&mut self, txn: Txn) -> Result<Txn, String> {
        let key = self.word("a key to compare")?;
        if self.eat("exists") {
            return Ok(txn.if_exists(&key));
        }
        if self.eat("missing") {
            return Ok(txn.if_missing(&key));
        }
        let version = self.eat("version");
        let equal = if self.eat("=") || self.eat("==") {
            true
        } else if self.eat("!=") {
            false
        } else {
            return Err(format!(
                "after the key {key:?}: expected =, !=, exists, missing or version"
            ));
        };
        let operand = self.word(if version { "a version" } else { "a value" })?;
        Ok(match (version, equal) {
            (false, true) => txn.if_value(&key, &operand),
            (false, false) => txn.if_value_not(&key, &operand),
            (true, true) => txn.if_version(&key, &operand),
            (true, false) => txn.if_version_not(&key, &operand),
        })
    }

    /// One branch's ops, up to `else` or the end; `success` says which branch.
    fn ops(&mut self, mut txn: Txn, success: bool) -> Result<Txn, String> {
        loop {
            txn = if self.eat("get") {
                let key = self.word("a key after get")?;
                if success {
                    txn.then_get(&key)
                } else {
                    txn.else_get(&key)
                }
            } else if self.eat("put") || self.eat("set") {
                let key = self.word("a key after put")?;
                let value = self.word("a value after put KEY")?;
                if success {
                    txn.then_put(&key, &value)
                } else {
                    txn.else_put(&key, &value)
                }
            } else if self.eat("del") || self.eat("delete") {
                let key = self.word("a key after del")?;
                if success {
                    txn.then_delete(&key)
                } else {
                    txn.else_delete(&key)
                }
            } else {
                return Err(match self.peek() {
                    Some(Token::Word(w)) => format!("expected get, put or del, found {:?}", w.text),
                    Some(Token::Comma) => "expected get, put or del, found a comma".into(),
                    None => "expected get, put or del, found the end of the line".into(),
                });
            };
            match self.peek() {
                None => return Ok(txn),
                Some(Token::Comma) => self.at += 1,
                Some(t) if success && t.is("else") => return Ok(txn),
                Some(Token::Word(w)) => {
                    return Err(format!(
                        "expected a comma before the next op, found {:?}",
                        w.text
                    ))
                }
            }
        }
    }
}

/// Parses the words after `txn`.
pub fn parse_txn(words: &[Word]) -> Result<Txn, String> {
    let mut parser = Parser {
        tokens: tokens(words),
        at: 0,
    };
    let parsed = (|| {
        let mut txn = Txn::new();
        if parser.eat("if") {
            txn = parser.condition(txn)?;
            while parser.eat("and") {
                txn = parser.condition(txn)?;
            }
            if !parser.eat("then") {
                return Err("expected and or then after a condition".to_string());
            }
        } else {
            parser.eat("then");
        }
        if parser.peek().is_none() {
            return Ok(txn);
        }
        txn = parser.ops(txn, true)?;
        if parser.eat("else") {
            txn = parser.ops(txn, false)?;
        }
        Ok(txn)
    })();
    parsed.map_err(|e| format!("{e}\nusage: {TXN_USAGE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Word> {
        line.split_whitespace()
            .map(|w| Word {
                text: w.to_string(),
                quoted: false,
            })
            .collect()
    }
    fn parse(line: &str) -> Result<Txn, String> {
        parse_txn(&words(line))
    }

    #[test]
    fn the_documented_example_parses() {
        assert_eq!(
            parse("if a = 1 and b exists then put a 2, del b else get a"),
            Ok(Txn::new()
                .if_value("a", "1")
                .if_exists("b")
                .then_put("a", "2")
                .then_delete("b")
                .else_get("a"))
        );
    }

    #[test]
    fn every_condition_and_op_has_a_spelling() {
        assert_eq!(
            parse("IF a != x AND b missing and c version = 2.3 and d version != 1.1 THEN get a , put b 'v' else del c, get d"),
            Ok(Txn::new()
                .if_value_not("a", "x")
                .if_missing("b")
                .if_version("c", "2.3")
                .if_version_not("d", "1.1")
                .then_get("a")
                .then_put("b", "'v'")
                .else_delete("c")
                .else_get("d"))
        );
        assert_eq!(
            parse("put a 1, put b 2"),
            Ok(Txn::new().then_put("a", "1").then_put("b", "2")),
            "no condition: then is optional"
        );
        assert_eq!(parse(""), Ok(Txn::new()), "the empty transaction");
    }

    #[test]
    fn quoted_words_are_never_keywords_or_separators() {
        let quoted = |text: &str| Word {
            text: text.into(),
            quoted: true,
        };
        let mut line = words("put");
        line.push(quoted("else"));
        line.push(quoted("a, b,"));
        assert_eq!(parse_txn(&line), Ok(Txn::new().then_put("else", "a, b,")));
    }

    #[test]
    fn the_empty_word_is_a_value() {
        let mut line = words("put k");
        line.push(Word {
            text: String::new(),
            quoted: false,
        });
        assert_eq!(parse_txn(&line), Ok(Txn::new().then_put("k", "")));
    }

    fn arguments(args: &[&str]) -> Result<Txn, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse_txn(&argument_words(&args))
    }

    #[test]
    fn one_shot_arguments_are_words_whose_commas_end_an_op_only_before_the_next() {
        assert_eq!(
            arguments(&["put", "a", "1,", "PUT", "b", "2", "else", "del", "c,", "get", "d"]),
            Ok(Txn::new()
                .then_put("a", "1")
                .then_put("b", "2")
                .else_delete("c")
                .else_get("d")),
            "a comma ending an argument before an op separates"
        );
        assert_eq!(
            arguments(&["put", "a", "x,", ",", "put", "b", "y,"]),
            Ok(Txn::new().then_put("a", "x,").then_put("b", "y,")),
            "before a comma of its own, or last, a comma is data"
        );
        assert_eq!(
            arguments(&["if", "k,", "=", "v,", "then", "put", "k,", ",,x,", "else", "get", "k,"]),
            Ok(Txn::new()
                .if_value("k,", "v,")
                .then_put("k,", ",,x,")
                .else_get("k,")),
            "commas are data in compares and keys"
        );
        assert_eq!(
            arguments(&["put", "", "", ",", "put", "a b", "\"q\" 'r'"]),
            Ok(Txn::new().then_put("", "").then_put("a b", "\"q\" 'r'")),
            "empty arguments, spaces and quotes are data"
        );
        assert_eq!(
            arguments(&["put", "else", "then", ",", "get", "if"]),
            Ok(Txn::new().then_put("else", "then").then_get("if")),
            "keywords only where the grammar expects one"
        );
        assert!(arguments(&["put", "a", "1", "put", "b", "2"])
            .unwrap_err()
            .contains("expected a comma"));
        assert!(arguments(&["put", "a", "1,,", "get", "b"])
            .unwrap_err()
            .contains("found a comma"));
    }

    #[test]
    fn mistakes_get_a_reason_and_the_usage() {
        for (line, reason) in [
            ("if a = 1 put a 2", "expected and or then"),
            (
                "if a ~ 1 then get a",
                "expected =, !=, exists, missing or version",
            ),
            ("then put a", "expected a value after put KEY"),
            ("then get a get b", "expected a comma"),
            ("then frob a", "expected get, put or del, found \"frob\""),
            ("then get a else get b else get c", "expected a comma"),
        ] {
            let error = parse(line).unwrap_err();
            assert!(error.contains(reason), "{line}: {error}");
            assert!(error.contains("usage: txn"), "{line}: {error}");
        }
    }
}
