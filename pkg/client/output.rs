//! Printing for the command-line tools. `println!` and `eprintln!` panic when they
//! cannot write (a closed pipe: `tpc client get k | head -c0`); these return the error
//! instead, so that a tool can end with an error status, quietly for a closed pipe, as
//! Unix tools do.

use std::io::{self, Write};

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Writes `text` and a newline to stdout and flushes it.
pub fn print_line(text: &str) -> io::Result<()> {
    print(&format!("{text}\n"))
}

/// Writes `text` and a newline to stderr; if that fails too, there is nowhere left to
/// say so.
pub fn eprint_line(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Says on stderr why `tool` could not write its output to stdout, unless the reader
/// closed the pipe (it has read all it wanted, as `head` does): that is not news.
pub fn report_stdout_error(tool: &str, error: &io::Error) {
    if error.kind() != io::ErrorKind::BrokenPipe {
        eprint_line(&format!("{tool}: cannot write to stdout: {error}"));
    }
}
