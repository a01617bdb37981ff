//! The `tpc` command: a leader, a follower, or a client, by its flags.
//!
//! Flags follow DESIGN §3. For the classic Go tooling's scripts, `-flag` is read as
//! `--flag`, boolean flags take `=true`/`=false`, and `--journal FILE` and
//! `--logtostderr` are accepted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use tracing::Instrument;

use tpc::bench::{self, Workload};
use tpc::client::output::{self, eprint_line};
use tpc::client::{self, shell, Client};
use tpc::net::{Address, ListenAddr, Listener};
use tpc::proxy::{self, Faults, Proxy, ProxyConfig};
use tpc::tpc::follower::{Follower, FollowerConfig};
use tpc::tpc::leader::{Leader, LeaderConfig};
use tpc::tpc::standby::{StandbyConfig, StandbyLeader};

/// mimalloc instead of glibc's malloc: every message allocates and frees many small
/// buffers (HTTP/2 frames, protobuf messages, journal records). Under a write load the
/// leader's user CPU per write was a quarter lower with it (alternating runs; see
/// BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The leader's port when none is given, and the port the client dials by default.
const DEFAULT_LEADER_PORT: u16 = 50000;

#[derive(Parser, Debug)]
#[command(
    name = "tpc",
    version,
    about = "A small, strongly consistent replicated key-value store (one leader, N followers, two-phase commit)",
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:
  tpc --tpc-follower --journal-dir data/f1 --kv-dir data/f1/kv --port 50001
  tpc --tpc-leader --journal-dir data/leader --follower 127.0.0.1:50001 --port 50000
  tpc client                      # interactive shell against 127.0.0.1:50000
  tpc client put greeting hello   # one command
  tpc bench --clients 64          # load the leader for 10 s and report
  scripts/cluster.sh 3            # a local leader and 3 followers

Logs go to stderr; filter them with RUST_LOG (e.g. RUST_LOG=debug)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// Run as the leader: serve clients and coordinate writes.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    tpc_leader: Option<bool>,
    /// Run as a follower: hold a full copy and vote on writes.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    tpc_follower: Option<bool>,
    /// Directory of the journal (the file DIR/journal). Created if absent.
    #[arg(long, value_name = "DIR")]
    journal_dir: Option<PathBuf>,
    /// The journal file itself (classic flag; instead of --journal-dir).
    #[arg(long, value_name = "FILE", conflicts_with = "journal_dir")]
    journal: Option<PathBuf>,
    /// Follower: directory of the key-value files. Created if absent.
    #[arg(long, value_name = "DIR")]
    kv_dir: Option<PathBuf>,
    /// Leader: a follower's address, host:port or unix:/path (repeat, or separate with commas).
    #[arg(long = "follower", value_name = "ADDR", value_delimiter = ',')]
    followers: Vec<String>,
    /// Leader: another leader's address (repeat, or separate with commas). Runs standby
    /// leaders (DESIGN §9): the leaders elect one active leader with Raft, on this same
    /// port; the others forward every call to it and take over when it fails. Run three
    /// (a majority must be up); every leader needs the same --follower and --replication.
    #[arg(long = "peer", value_name = "ADDR", value_delimiter = ',')]
    peers: Vec<String>,
    /// Leader with --peer: this leader's address as the other leaders name it in their
    /// --peer. Default: the --listen address, or 127.0.0.1:PORT with --port.
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,
    /// Listen on this port on all interfaces (IPv6 and IPv4). Leader default: 50000.
    #[arg(long, conflicts_with = "listen")]
    port: Option<u16>,
    /// Listen on this address instead: host:port or unix:/path.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// This node's name in logs.
    #[arg(long)]
    name: Option<String>,
    /// Also serve HTTP on this port: /metrics (Prometheus) and /healthz.
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
    /// Leader: how long to wait for each follower's vote; no answer counts as ABORT.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    vote_timeout: Duration,
    /// Leader: how many followers hold each key, placed on a hash ring (README,
    /// "Placement"). With at least as many as there are followers, every follower holds
    /// every key, as classic tooling expects. Fixed once the cluster has formed its view.
    #[arg(long, value_name = "R", default_value_t = tpc::placement::DEFAULT_REPLICATION, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    replication: usize,
    /// Leader: a member that has not answered for this long leaves the members (its keys
    /// move to the others) and rejoins by itself when it answers again (README,
    /// "Changing the members"). At least 3s (a follower's lease for direct reads is 2s);
    /// "off" never removes one.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_member_timeout)]
    member_timeout: OrOff,
    /// Follower: a transaction prepared here that has had no decision for this long is
    /// asked about: the other participants say what they know, and the decision they
    /// give is applied with no leader (cooperative termination, DESIGN §9; README,
    /// "Limits"). Asked again at that interval until decided; "off" never asks.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_or_off)]
    termination_timeout: OrOff,
    /// Accepted for compatibility with the classic tooling; logs always go to stderr.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    logtostderr: Option<bool>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Talk to a cluster: an interactive shell, or one command.
    Client(ClientArgs),
    /// Show a leader's view of its cluster: followers, in-flight transactions, journal.
    Status(StatusArgs),
    /// The cluster's members: which followers hold keys, in which view (DESIGN §8).
    Members(MembersArgs),
    /// Forward between the leader and one follower, injecting faults (for tests).
    Proxy(ProxyArgs),
    /// Load a leader with requests and report throughput, latency and errors.
    Bench(BenchArgs),
    /// Make a throwaway CA and certificates it signs, to try mutual TLS with (README,
    /// "Mutual TLS"); bring your own CA for a real deployment.
    Certs(CertsArgs),
}

impl Command {
    /// The command's TLS flags; `certs` has none.
    fn tls(&self) -> Option<&TlsArgs> {
        Some(match self {
            Command::Client(args) => &args.tls,
            Command::Status(args) => &args.tls,
            Command::Members(MembersArgs {
                command: MembersCommand::List(args),
            }) => &args.tls,
            Command::Members(MembersArgs {
                command: MembersCommand::Add(args) | MembersCommand::Remove(args),
            }) => &args.tls,
            Command::Bench(args) => &args.tls,
            Command::Proxy(args) => &args.tls,
            Command::Certs(_) => return None,
        })
    }
}

/// Mutual TLS (DESIGN §10). Give all three, to every node and every tool: every
/// connection the process makes or accepts is then mutual TLS, and plaintext peers and
/// certificates that the CA did not sign are refused, with the reason, at both ends.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Mutual TLS")]
struct TlsArgs {
    /// This process's certificate (PEM), signed by --tls-ca, valid for the host names
    /// and addresses that peers dial it by, for server and client authentication.
    #[arg(long, value_name = "FILE", env = "TPC_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "TPC_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The CA certificate (PEM): peers whose certificates it did not sign are refused.
    #[arg(long, value_name = "FILE", env = "TPC_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// Turns TLS on for the whole process if the flags ask for it.
    fn install(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => tpc::net::tls::install(&tpc::net::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Example (what scripts/cluster.sh --tls does):
  tpc certs --dir data/tls leader f1 f2 f3 client
  tpc --tpc-follower --journal-dir data/f1 --kv-dir data/f1/kv --port 50001 \\
      --tls-cert data/tls/f1.pem --tls-key data/tls/f1-key.pem --tls-ca data/tls/ca.pem
  tpc client --tls-cert data/tls/client.pem --tls-key data/tls/client-key.pem --tls-ca data/tls/ca.pem")]
struct CertsArgs {
    /// Where to write DIR/ca.pem and DIR/ca-key.pem (made unless already there), and
    /// DIR/NAME.pem and DIR/NAME-key.pem for each NAME. Existing certificates are not
    /// overwritten.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// A host name or IP address the certificates are valid for, as peers dial them
    /// (repeat, or separate with commas) [default: localhost,127.0.0.1,::1].
    #[arg(long = "host", value_name = "HOST", value_delimiter = ',')]
    hosts: Vec<String>,
    /// The certificates to make, e.g. leader f1 f2 f3 client.
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
struct MembersArgs {
    #[command(subcommand)]
    command: MembersCommand,
}

#[derive(Subcommand, Debug)]
enum MembersCommand {
    /// Show the view: its epoch, the replication factor, and each member's id, address
    /// and state (active, down; joining or leaving while the view changes).
    List(MembersListArgs),
    /// Make a follower a member (DESIGN §8): it catches up on the keys it gains from the
    /// other members, then holds them. The follower must be one the leader dials
    /// (--follower) and must have answered it; an empty one is fine. Returns once the
    /// change is journaled; `members list` shows it under way.
    Add(MembersChangeArgs),
    /// Take a member out of the view (DESIGN §8): its keys move to the others, which
    /// catch up first; it then drops them. Refused for the last member. Returns once
    /// the change is journaled.
    Remove(MembersChangeArgs),
}

#[derive(Args, Debug)]
struct MembersChangeArgs {
    /// The follower's address, exactly as the leader dials it (its --follower value).
    #[arg(value_name = "FOLLOWER_ADDR")]
    address: String,
    /// The leader's address, host:port or unix:/path; with standby leaders, several
    /// (A,B,C): the active one is asked.
    #[arg(long, default_value = client::DEFAULT_LEADER, value_name = "ADDR", value_delimiter = ',')]
    leader: Vec<String>,
    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args, Debug)]
struct MembersListArgs {
    /// The leader's address, host:port or unix:/path; with standby leaders, several
    /// (A,B,C): the active one is asked.
    #[arg(long, default_value = client::DEFAULT_LEADER, value_name = "ADDR", value_delimiter = ',')]
    leader: Vec<String>,
    /// Print one JSON object: {"epoch", "replication", "members": [{"id", "address",
    /// "state"}], "moving_keys"}.
    #[arg(long)]
    json: bool,
    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The leader's address, host:port or unix:/path; with standby leaders, several
    /// (A,B,C): the active one is asked.
    #[arg(long, default_value = client::DEFAULT_LEADER, value_name = "ADDR", value_delimiter = ',')]
    leader: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args, Debug)]
#[command(
    after_help = "The leader's --follower points at --listen; the proxy forwards to --target.
Example:
  tpc proxy --listen 127.0.0.1:6001 --target 127.0.0.1:50001 --drop 0.05 --dup 0.02 --delay-ms 0-200 --seed 7"
)]
struct ProxyArgs {
    /// Where the leader connects: host:port or unix:/path.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// The follower to forward to: host:port or unix:/path.
    #[arg(long, value_name = "ADDR")]
    target: String,
    /// Probability of dropping a leader message (and of failing a read with UNAVAILABLE).
    #[arg(long, value_name = "P", default_value = "0", value_parser = proxy::parse_probability)]
    drop: f64,
    /// Probability of dropping a follower reply.
    #[arg(long, value_name = "P", default_value = "0", value_parser = proxy::parse_probability)]
    drop_reply: f64,
    /// Probability of forwarding a leader message twice.
    #[arg(long, value_name = "P", default_value = "0", value_parser = proxy::parse_probability)]
    dup: f64,
    /// Probability of forwarding a follower reply twice.
    #[arg(long, value_name = "P", default_value = "0", value_parser = proxy::parse_probability)]
    dup_reply: f64,
    /// Delay of every message and read, in milliseconds: MIN-MAX (e.g. 0-200) or one number.
    #[arg(long, value_name = "MS", default_value = "0", value_parser = proxy::parse_delay_range)]
    delay_ms: (u64, u64),
    /// Probability of delivering a message (either way) again after 1-20 later ones.
    #[arg(long, value_name = "P", default_value = "0", value_parser = proxy::parse_probability)]
    replay: f64,
    /// Probability that a message (either way) cuts the stream.
    #[arg(long, value_name = "P", default_value = "0", value_parser = proxy::parse_probability)]
    cut: f64,
    /// Seed of the fault decisions (default: random; the seed used is logged at start).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Closed loop: each client sends one request, waits for the answer, then sends the next.
ops counts successful requests and the latency percentiles are theirs; failed requests
are counted by gRPC status code (NOT_FOUND too). get, mixed and txn-get first write every
key once.
Transactions (one op = one Txn): txn puts --txn-keys distinct random keys and compares
nothing; txn-get reads --txn-keys distinct keys in one read-only Txn. cas: every client
increments the counter in the hot key bench-cas with `if version = V then put N+1 else
get` (V and N from its last answer); ops are swaps, refused swaps are reported as cas
conflicts and retried. The counter starts from what bench-cas holds (absent: 0);
--keyspace and --value-size do not apply to cas.
The keys written are bench-0 ... bench-<K-1> and bench-cas: do not point this at data
you need.
Exit status: 0 if the load ran (even with errors), 2 if it could not start.
Examples:
  tpc bench --leader 127.0.0.1:50000 --clients 64 --seconds 10 --op mixed --json
  tpc bench --clients 64 --op txn --txn-keys 4     # compare with --op put
  tpc bench --clients 64 --op cas"
)]
struct BenchArgs {
    /// The leader's address, host:port or unix:/path; with standby leaders, several
    /// (A,B,C): the active one is loaded.
    #[arg(long, default_value = client::DEFAULT_LEADER, value_name = "ADDR", value_parser = parse_address, value_delimiter = ',')]
    leader: Vec<Address>,
    /// Concurrent clients, each with one request in flight at a time.
    #[arg(long, value_name = "N", default_value = "16", value_parser = at_least_one::<usize>)]
    clients: usize,
    /// How long to send requests, in seconds.
    #[arg(long, value_name = "S", default_value = "10", value_parser = at_least_one::<u64>)]
    seconds: u64,
    /// Which requests to send (one op: a request, or one transaction of txn, txn-get and cas).
    #[arg(long, value_name = "OP", default_value = "put")]
    op: Workload,
    /// Keys per transaction of --op txn and txn-get: 1 to 128, at most --keyspace [default: 4].
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(1..=bench::MAX_TXN_KEYS as u64))]
    txn_keys: Option<u64>,
    /// Bytes in each value written (printable ASCII; at most 3 MiB).
    #[arg(long, value_name = "B", default_value = "100", value_parser = parse_value_size)]
    value_size: usize,
    /// Number of distinct keys; each request picks one uniformly at random.
    #[arg(long, value_name = "K", default_value = "1000", value_parser = at_least_one::<u64>)]
    keyspace: u64,
    /// gRPC connections to the leader, clients spread evenly over them [default: the smaller of --clients and 8].
    #[arg(long, value_name = "C", value_parser = at_least_one::<usize>)]
    connections: Option<usize>,
    /// How long one request (or connecting) may take; a request not answered by then counts as DEADLINE_EXCEEDED.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print one JSON object instead of text, and no progress bar.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

impl BenchArgs {
    /// The run's settings (loading the first --leader; `bench_main` picks the active one).
    fn config(&self) -> bench::Config {
        use std::io::IsTerminal;
        bench::Config {
            leader: self.leader[0].clone(),
            clients: self.clients,
            connections: self
                .connections
                .unwrap_or(self.clients.min(bench::DEFAULT_MAX_CONNECTIONS)),
            duration: Duration::from_secs(self.seconds),
            workload: self.op,
            value_size: self.value_size,
            keyspace: self.keyspace,
            // At most 128: clap checked it.
            txn_keys: self
                .txn_keys
                .map_or(bench::DEFAULT_TXN_KEYS, |keys| keys as usize),
            timeout: self.timeout,
            show_progress: !self.json && std::io::stderr().is_terminal(),
        }
    }

    /// The checks that involve several flags; the error says which.
    fn check(&self) -> Result<(), String> {
        if self.txn_keys.is_some() && !self.op.uses_txn_keys() {
            return Err(format!(
                "--txn-keys is for --op txn and --op txn-get, not --op {}",
                self.op.name()
            ));
        }
        self.config().check()
    }
}

/// Parses the command line, and checks what clap cannot check flag by flag; an error
/// is clap's, with the usage of the subcommand at fault.
fn parse_cli(args: impl IntoIterator<Item = String>) -> Result<Cli, clap::Error> {
    let cli = Cli::try_parse_from(args)?;
    if let Some(Command::Bench(bench)) = &cli.command {
        if let Err(message) = bench.check() {
            let mut command = Cli::command();
            command.build();
            let bench = command
                .find_subcommand_mut("bench")
                .expect("tpc has a bench subcommand");
            return Err(bench.error(ErrorKind::ArgumentConflict, message));
        }
    }
    Ok(cli)
}

fn parse_address(text: &str) -> Result<Address, String> {
    text.parse()
}

/// Parses a whole number of 1 or more.
fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(text: &str) -> Result<T, String> {
    match text.trim().parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of 1 or more")),
    }
}

fn parse_value_size(text: &str) -> Result<usize, String> {
    let size: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes"))?;
    if size > tpc::limits::MAX_VALUE_BYTES {
        return Err(format!(
            "{size} bytes is over the value limit of {} bytes (3 MiB)",
            tpc::limits::MAX_VALUE_BYTES
        ));
    }
    Ok(size)
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// The leader's address, host:port or unix:/path; with standby leaders, several
    /// (A,B,C): the active one is asked.
    #[arg(long, default_value = client::DEFAULT_LEADER, value_name = "ADDR", value_delimiter = ',')]
    leader: Vec<String>,
    /// How long one request may take.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    op: Option<ClientOp>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Subcommand, Debug)]
enum ClientOp {
    /// Print the value of KEY (exit status 1 if absent, 2 on error).
    Get {
        /// Also print the key's version (the id of the transaction that last wrote it)
        /// on a second line, `version <epoch>.<seq>`.
        #[arg(short = 'v', long)]
        with_version: bool,
        key: String,
    },
    /// Set KEY to VALUE on every follower.
    Put {
        key: String,
        /// The value; or give --value-file.
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value from PATH instead (`-`: stdin), byte for byte, a last newline
        /// included: UTF-8 text of at most 3 MiB. For values longer than an argument may be.
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        value_file: Option<PathBuf>,
    },
    /// Delete KEY.
    #[command(alias = "delete")]
    Del { key: String },
    /// Set KEY to NEW only if its value is EXPECTED, atomically (exit status 1 if it
    /// was not: the current value is printed).
    Cas {
        key: String,
        expected: String,
        new: String,
    },
    /// Set one key or more in one transaction: mput K1 V1 [K2 V2]...
    #[command(override_usage = "tpc client mput <KEY> <VALUE> [<KEY> <VALUE>]...")]
    Mput {
        /// A key and its value, then any more pairs (each key once).
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
    },
    /// Delete one key or more in one transaction.
    Mdel {
        /// The keys (each once).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Run a transaction (DESIGN §6), for example:
    /// txn if a = 1 and b exists then put a 2, del b else get a
    ///
    /// Syntax: txn [if COND [and COND]...] then OP[, OP]... [else OP[, OP]...];
    /// COND: KEY = VALUE | KEY != VALUE | KEY exists | KEY missing | KEY version = E.S
    /// | KEY version != E.S; OP: get KEY | put KEY VALUE | del KEY. Prints the branch
    /// that ran, what its GETs read and the version it wrote.
    ///
    /// Each argument is one word as your shell passes it: spaces, quotes and commas in
    /// it are data, and an empty argument ("") is the empty value. A comma at the end of
    /// an argument separates two ops when the next argument is get, put or del (put a
    /// 1, put b 2); a comma of its own always does. Any other comma is data: put k "x,"
    /// as the last op, or put k "x," , put j y.
    Txn {
        /// The transaction, in the syntax above (quote words with spaces for your shell).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "WORDS"
        )]
        words: Vec<String>,
    },
}

/// Parses `500ms`, `1s`, `1.5s`, `2m`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms or 1s"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("{text:?}: unit must be ms, s or m")),
    };
    if !(seconds > 0.0 && seconds < 1e6) {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A duration, or "off" (`None`).
#[derive(Clone, Copy, Debug)]
struct OrOff(Option<Duration>);

fn parse_or_off(text: &str) -> Result<OrOff, String> {
    match text.trim() {
        "off" => Ok(OrOff(None)),
        _ => parse_duration(text).map(|d| OrOff(Some(d))),
    }
}

/// `--member-timeout`: at least the lease and a margin, or off.
fn parse_member_timeout(text: &str) -> Result<OrOff, String> {
    let OrOff(Some(timeout)) = parse_or_off(text)? else {
        return Ok(OrOff(None));
    };
    if timeout < tpc::tpc::lease::MIN_MEMBER_TIMEOUT {
        return Err(format!(
            "{text:?} is shorter than {:?}: a member must be silent longer than its lease \
             for direct reads ({:?}) before it is removed, or say \"off\"",
            tpc::tpc::lease::MIN_MEMBER_TIMEOUT,
            tpc::tpc::lease::LEASE
        ));
    }
    Ok(OrOff(Some(timeout)))
}

/// Rewrites Go-style `-flag` into `--flag` for the long flags we know.
fn go_style_args() -> Vec<String> {
    let command = Cli::command();
    let mut known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .collect();
    for sub in command.get_subcommands() {
        known.extend(
            sub.get_arguments()
                .filter_map(|a| a.get_long().map(String::from)),
        );
    }
    std::env::args()
        .map(|arg| {
            let bare = arg.strip_prefix('-').filter(|rest| !rest.starts_with('-'));
            match bare {
                Some(rest)
                    if known
                        .iter()
                        .any(|k| rest.split('=').next() == Some(k.as_str())) =>
                {
                    format!("-{arg}")
                }
                _ => arg,
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = parse_cli(go_style_args()).unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprint_line(&format!("tpc: error: cannot start the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    let tls = match &cli.command {
        Some(command) => command.tls(),
        None => Some(&cli.node.tls),
    };
    if let Err(e) = tls.map_or(Ok(()), TlsArgs::install) {
        eprint_line(&format!("tpc: error: {e}"));
        return ExitCode::from(2);
    }
    match cli.command {
        Some(Command::Certs(args)) => certs_main(&args),
        Some(Command::Client(args)) => runtime.block_on(client_main(args)),
        Some(Command::Status(args)) => runtime.block_on(status_main(args)),
        Some(Command::Members(args)) => runtime.block_on(members_main(args)),
        Some(Command::Bench(args)) => runtime.block_on(bench_main(args)),
        Some(Command::Proxy(args)) => {
            init_logging();
            match runtime.block_on(proxy_main(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprint_line(&format!("tpc proxy: error: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            init_logging();
            match runtime.block_on(node_main(cli.node)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprint_line(&format!("tpc: error: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn certs_main(args: &CertsArgs) -> ExitCode {
    let hosts = if args.hosts.is_empty() {
        tpc::net::certs::LOCAL_HOSTS
            .iter()
            .map(|h| h.to_string())
            .collect()
    } else {
        args.hosts.clone()
    };
    match tpc::net::certs::write(&args.dir, &args.names, &hosts) {
        Ok(written) => {
            let lines: String = written
                .iter()
                .map(|path| format!("wrote {}\n", path.display()))
                .collect();
            printed("tpc certs", output::print(&lines))
        }
        Err(e) => {
            eprint_line(&format!("tpc certs: error: {e}"));
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    // openraft reports every unanswered heartbeat while a leader is down; its errors
    // still show, and tpc says itself when leadership changes (pkg/tpc/standby.rs).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn node_main(args: NodeArgs) -> Result<(), String> {
    let leader = args.tpc_leader == Some(true);
    let follower = args.tpc_follower == Some(true);
    if leader == follower {
        return Err(
            "choose one role: --tpc-leader or --tpc-follower (or use `tpc client`); see tpc --help"
                .into(),
        );
    }
    let journal_path = match (&args.journal_dir, &args.journal) {
        (Some(dir), None) => dir.join("journal"),
        (None, Some(file)) => file.clone(),
        _ => return Err("give --journal-dir DIR (or the classic --journal FILE)".into()),
    };
    let listen = match (&args.port, &args.listen) {
        (Some(port), None) => ListenAddr::Port(*port),
        (None, Some(addr)) => ListenAddr::Addr(addr.parse::<Address>()?),
        (None, None) if leader => ListenAddr::Port(DEFAULT_LEADER_PORT),
        _ => return Err("give --port PORT or --listen ADDR".into()),
    };
    let role = if leader { "leader" } else { "follower" };
    let name = args.name.clone().unwrap_or_else(|| role.to_string());
    let span = tracing::info_span!("node", name = %name);
    async move {
        tpc::net::cut::listen_for_signals()
            .map_err(|e| format!("cannot listen for the console's signals: {e}"))?;
        let shutdown = shutdown_signal();
        let http = match args.http_port {
            Some(port) => {
                let listener = tpc::http::bind(port)
                    .map_err(|e| format!("cannot listen on HTTP port {port}: {e}"))?;
                if let Ok(bound) = listener.local_addr() {
                    tracing::info!(address = %format!("127.0.0.1:{}", bound.port()), "HTTP endpoints /metrics and /healthz listening");
                }
                Some(listener)
            }
            None => None,
        };
        if leader {
            let config = LeaderConfig {
                journal_path,
                followers: args.followers.clone(),
                replication: args.replication,
                vote_timeout: args.vote_timeout,
                member_timeout: args.member_timeout.0,
            };
            if !args.peers.is_empty() {
                let advertise = match (&args.advertise, &listen) {
                    (Some(addr), _) => addr.clone(),
                    (None, ListenAddr::Port(port)) => format!("127.0.0.1:{port}"),
                    (None, ListenAddr::Addr(_)) => args.listen.clone().unwrap_or_default(),
                };
                let config = StandbyConfig { leader: config, advertise, peers: args.peers.clone() };
                let mut node = StandbyLeader::start(config).await.map_err(|e| e.to_string())?;
                if let Some(http) = http {
                    node = node.with_http(http);
                }
                let listener = Listener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen:?}: {e}"))?;
                tracing::info!(address = %listener.local_address(), peers = ?args.peers, followers = ?args.followers, "leader listening");
                return node.serve(listener, shutdown).await.map_err(|e| e.to_string());
            }
            if args.advertise.is_some() {
                return Err("--advertise names this leader to its --peer leaders; give --peer too".into());
            }
            let mut node = Leader::start(config).map_err(|e| e.to_string())?;
            if let Some(http) = http {
                node = node.with_http(http);
            }
            let listener = Listener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen:?}: {e}"))?;
            tracing::info!(address = %listener.local_address(), followers = ?args.followers, "leader listening");
            node.serve(listener, shutdown).await.map_err(|e| e.to_string())
        } else {
            let kv_dir = args.kv_dir.clone().ok_or("a follower needs --kv-dir DIR")?;
            let mut node = Follower::open(&FollowerConfig { journal_path, kv_dir })
                .map_err(|e| e.to_string())?
                .with_termination_timeout(args.termination_timeout.0);
            if let Some(http) = http {
                node = node.with_http(http);
            }
            let listener = Listener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen:?}: {e}"))?;
            tracing::info!(address = %listener.local_address(), "follower listening");
            node.serve(listener, shutdown).await.map_err(|e| e.to_string())
        }
    }
    .instrument(span)
    .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn proxy_main(args: ProxyArgs) -> Result<(), String> {
    let listen = ListenAddr::Addr(
        args.listen
            .parse::<Address>()
            .map_err(|e| format!("--listen: {e}"))?,
    );
    let target = args
        .target
        .parse::<Address>()
        .map_err(|e| format!("--target: {e}"))?;
    let config = ProxyConfig {
        target,
        faults: Faults {
            drop: args.drop,
            drop_reply: args.drop_reply,
            dup: args.dup,
            dup_reply: args.dup_reply,
            delay_ms: args.delay_ms,
            replay: args.replay,
            cut: args.cut,
        },
        seed: args.seed.unwrap_or_else(rand::random),
    };
    let proxy = Proxy::new(config).map_err(|e| e.to_string())?;
    let listener = Listener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    proxy
        .serve(listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// The leader of `leaders` to talk to (`client::resolve_leader`), or the exit status
/// after saying why there is none.
async fn leader_of(tool: &str, leaders: &[String], timeout: Duration) -> Result<String, ExitCode> {
    client::resolve_leader(leaders, timeout).await.map_err(|e| {
        eprint_line(&format!("{tool}: {e}"));
        ExitCode::from(2)
    })
}

async fn status_main(args: StatusArgs) -> ExitCode {
    let leader = match leader_of("tpc status", &args.leader, args.timeout).await {
        Ok(leader) => leader,
        Err(code) => return code,
    };
    let text = match client::status::fetch(&leader, args.timeout).await {
        Ok(status) if args.json => client::status::render_json(&status) + "\n",
        Ok(status) => client::status::render_text(&status, std::time::SystemTime::now()),
        Err(e) => {
            eprint_line(&format!("tpc status: {leader}: {e}"));
            return ExitCode::from(2);
        }
    };
    printed("tpc status", output::print(&text))
}

/// The exit status of a tool that has done its work and printed what `result` says:
/// 0, or 2 if stdout failed (then said on stderr, unless it was a closed pipe).
fn printed(tool: &str, result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::report_stdout_error(tool, &e);
            ExitCode::from(2)
        }
    }
}

async fn members_main(args: MembersArgs) -> ExitCode {
    let (args, add) = match args.command {
        MembersCommand::List(args) => return members_list(args).await,
        MembersCommand::Add(args) => (args, true),
        MembersCommand::Remove(args) => (args, false),
    };
    let verb = if add { "add" } else { "remove" };
    let leader = match leader_of("tpc members", &args.leader, args.timeout).await {
        Ok(leader) => leader,
        Err(code) => return code,
    };
    match client::members::change(&leader, &args.address, add, args.timeout).await {
        Ok(epoch) => {
            let text = format!(
                "view {epoch}: {} {}; the keys that move are being copied (see `tpc members list`)\n",
                args.address,
                if add { "joins" } else { "leaves" }
            );
            printed("tpc members", output::print(&text))
        }
        Err(e) => {
            eprint_line(&format!("tpc members {verb} {}: {e}", args.address));
            ExitCode::from(2)
        }
    }
}

async fn members_list(args: MembersListArgs) -> ExitCode {
    let leader = match leader_of("tpc members list", &args.leader, args.timeout).await {
        Ok(leader) => leader,
        Err(code) => return code,
    };
    let text = match client::members::fetch(&leader, args.timeout).await {
        Ok(view) if args.json => client::members::render_json(&view) + "\n",
        Ok(view) => client::members::render_text(&view),
        Err(e) => {
            eprint_line(&format!("tpc members list: {leader}: {e}"));
            return ExitCode::from(2);
        }
    };
    printed("tpc members list", output::print(&text))
}

async fn bench_main(args: BenchArgs) -> ExitCode {
    let leaders: Vec<String> = args.leader.iter().map(Address::to_string).collect();
    let leader = match leader_of("tpc bench", &leaders, args.timeout).await {
        Ok(leader) => leader,
        Err(code) => return code,
    };
    let config = match leader.parse::<Address>() {
        Ok(leader) => bench::Config {
            leader,
            ..args.config()
        },
        Err(e) => {
            eprint_line(&format!(
                "tpc bench: the active leader's address {leader}: {e}"
            ));
            return ExitCode::from(2);
        }
    };
    // Ctrl-C ends the run early, with a report; if the handler cannot be installed,
    // the run simply goes on to its end.
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let text = match bench::run(&config, interrupt).await {
        Ok(report) if args.json => format!("{}\n", bench::report::render_json(&report)),
        Ok(report) => bench::report::render_text(&report),
        Err(e) => {
            eprint_line(&format!("tpc bench: {e}"));
            return ExitCode::from(2);
        }
    };
    printed("tpc bench", output::print(&text))
}

async fn client_main(args: ClientArgs) -> ExitCode {
    let leader = match leader_of("tpc client", &args.leader, args.timeout).await {
        Ok(leader) => leader,
        Err(code) => return code,
    };
    let mut client = match Client::new(&leader, args.timeout) {
        Ok(client) => client,
        Err(e) => {
            eprint_line(&format!("tpc client: {e}"));
            return ExitCode::from(2);
        }
    };
    let command = match args.op {
        None => {
            return match shell::interactive(client, &leader, &args.leader, args.timeout).await {
                Ok(()) => ExitCode::SUCCESS,
                // A closed pipe on stdout: the reader wanted no more.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(2),
                Err(e) => {
                    eprint_line(&format!("tpc client: {e}"));
                    ExitCode::from(2)
                }
            };
        }
        Some(ClientOp::Get { key, with_version }) => shell::Command::Get { key, with_version },
        Some(ClientOp::Put {
            key,
            value,
            value_file,
        }) => match (value, value_file) {
            (Some(value), _) => shell::Command::Put(key, value),
            (None, Some(path)) => match read_value_file(&path) {
                Ok(value) => shell::Command::Put(key, value),
                Err(e) => return usage_error(&e),
            },
            (None, None) => unreachable!("clap requires a value or --value-file"),
        },
        Some(ClientOp::Del { key }) => shell::Command::Delete(key),
        Some(ClientOp::Cas { key, expected, new }) => shell::Command::Cas { key, expected, new },
        Some(ClientOp::Mput { pairs }) => match shell::parse_args("mput", &pairs) {
            Ok(command) => command,
            Err(e) => return usage_error(&e),
        },
        Some(ClientOp::Mdel { keys }) => match shell::parse_args("mdel", &keys) {
            Ok(command) => command,
            Err(e) => return usage_error(&e),
        },
        Some(ClientOp::Txn { words }) => match shell::parse_args("txn", &words) {
            Ok(command) => command,
            Err(e) => return usage_error(&e),
        },
    };
    let prints = matches!(command, shell::Command::Get { .. } | shell::Command::Txn(_));
    match shell::run(&mut client, command).await {
        Ok(text) if prints => printed("tpc client", output::print_line(&text)),
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprint_line(&format!("error: {error}"));
            if error.starts_with("NOT_FOUND") || error.starts_with(shell::NOT_SWAPPED) {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// The value in the file `path` (`-`: stdin), which must be UTF-8 (values are strings)
/// and at most the value limit; reading stops just past the limit.
fn read_value_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let limit = tpc::limits::MAX_VALUE_BYTES;
    let (name, read) = if path.as_os_str() == "-" {
        (
            "stdin".to_string(),
            Box::new(std::io::stdin()) as Box<dyn Read>,
        )
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("--value-file {}: {e}", path.display()))?;
        (path.display().to_string(), Box::new(file) as Box<dyn Read>)
    };
    let mut bytes = Vec::new();
    read.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("--value-file {name}: {e}"))?;
    if bytes.len() > limit {
        return Err(format!(
            "--value-file {name}: over the value limit of 3 MiB ({limit} bytes)"
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| format!("--value-file {name}: not UTF-8 text (values are strings)"))
}

fn usage_error(error: &str) -> ExitCode {
    eprint_line(&format!("tpc client: {error}"));
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "0", "0s", "x", "1h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn proxy_flags_parse_and_are_checked() {
        let cli = Cli::try_parse_from([
            "tpc",
            "proxy",
            "--listen",
            "unix:/tmp/p.sock",
            "--target",
            "127.0.0.1:5",
            "--drop",
            "0.05",
            "--dup-reply",
            "1",
            "--delay-ms",
            "0-200",
            "--seed",
            "7",
        ])
        .expect("valid proxy flags");
        let Some(Command::Proxy(args)) = cli.command else {
            panic!("not the proxy command");
        };
        assert_eq!((args.drop, args.dup_reply, args.cut), (0.05, 1.0, 0.0));
        assert_eq!((args.delay_ms, args.seed), ((0, 200), Some(7)));
        for bad in [
            vec!["--drop", "1.5"],
            vec!["--cut", "-0.1"],
            vec!["--replay", "often"],
            vec!["--delay-ms", "200-100"],
            vec!["--delay-ms", "x"],
        ] {
            let mut argv = vec!["tpc", "proxy", "--listen", ":1", "--target", ":2"];
            argv.extend(bad.iter());
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bench_flags_have_their_defaults_and_are_checked() {
        let cli = Cli::try_parse_from(["tpc", "bench"]).expect("defaults suffice");
        let Some(Command::Bench(args)) = cli.command else {
            panic!("not the bench command");
        };
        assert_eq!(
            args.leader,
            vec![client::DEFAULT_LEADER.parse::<Address>().unwrap()]
        );
        assert_eq!(
            (args.clients, args.seconds, args.op),
            (16, 10, Workload::Put)
        );
        assert_eq!((args.value_size, args.keyspace), (100, 1000));
        assert_eq!(
            (args.connections, args.timeout, args.json),
            (None, Duration::from_secs(5), false)
        );
        assert_eq!(args.txn_keys, None);
        assert_eq!(args.config().txn_keys, bench::DEFAULT_TXN_KEYS);
        let cli = Cli::try_parse_from([
            "tpc",
            "bench",
            "--leader",
            "unix:/tmp/l.sock",
            "--op",
            "mixed",
            "--clients",
            "3",
            "--value-size",
            "0",
            "--json",
        ])
        .expect("valid bench flags");
        let Some(Command::Bench(args)) = cli.command else {
            panic!("not the bench command");
        };
        assert_eq!(args.leader, vec![Address::Unix("/tmp/l.sock".into())]);
        assert_eq!(
            (args.op, args.clients, args.value_size, args.json),
            (Workload::Mixed, 3, 0, true)
        );
        for bad in [
            vec!["--clients", "0"],
            vec!["--seconds", "0"],
            vec!["--keyspace", "-1"],
            vec!["--connections", "0"],
            vec!["--value-size", "3145729"],
            vec!["--op", "delete"],
            vec!["--leader", "nowhere"],
        ] {
            let mut argv = vec!["tpc", "bench"];
            argv.extend(bad.iter());
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    fn parse_bench(flags: &[&str]) -> Result<BenchArgs, clap::Error> {
        let argv = ["tpc", "bench"].iter().chain(flags).map(|s| s.to_string());
        match parse_cli(argv)?.command {
            Some(Command::Bench(args)) => Ok(args),
            other => panic!("not the bench command: {other:?}"),
        }
    }

    #[test]
    fn bench_transaction_flags_are_parsed_and_checked_together() {
        let args = parse_bench(&["--op", "txn", "--txn-keys", "8"]).expect("valid");
        assert_eq!((args.op, args.config().txn_keys), (Workload::Txn, 8));
        let args = parse_bench(&["--op", "txn-get"]).expect("valid");
        assert_eq!((args.op, args.config().txn_keys), (Workload::TxnGet, 4));
        let args = parse_bench(&["--op", "txn", "--txn-keys", "128"]).expect("valid");
        assert_eq!(args.config().txn_keys, 128);
        let args = parse_bench(&["--op", "txn", "--txn-keys", "5", "--keyspace", "5"]);
        assert_eq!(args.expect("valid").config().keyspace, 5);
        assert_eq!(
            parse_bench(&["--op", "cas"]).expect("valid").op,
            Workload::Cas
        );

        for (bad, says) in [
            (
                vec!["--op", "txn", "--txn-keys", "0"],
                "0 is not in 1..=128",
            ),
            (
                vec!["--op", "txn", "--txn-keys", "129"],
                "129 is not in 1..=128",
            ),
            (vec!["--op", "txn-get", "--txn-keys", "x"], "--txn-keys"),
            (
                vec!["--op", "txn", "--txn-keys", "6", "--keyspace", "5"],
                "--txn-keys 6 is more than --keyspace 5",
            ),
            // The default, 4, is checked too.
            (
                vec!["--op", "txn-get", "--keyspace", "3"],
                "--txn-keys 4 is more than --keyspace 3",
            ),
            (
                vec!["--op", "put", "--txn-keys", "4"],
                "--txn-keys is for --op txn and --op txn-get, not --op put",
            ),
            (vec!["--op", "cas", "--txn-keys", "2"], "not --op cas"),
            (
                vec![
                    "--op",
                    "txn",
                    "--txn-keys",
                    "128",
                    "--value-size",
                    "1048576",
                ],
                "over the limit of 4194304 (4 MiB)",
            ),
        ] {
            let error = parse_bench(&bad).expect_err(says).render().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
        // An error of several flags shows the usage of bench, not of tpc.
        let error = parse_bench(&["--op", "txn", "--keyspace", "2"]).expect_err("4 > 2");
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        assert!(
            error
                .render()
                .to_string()
                .contains("Usage: tpc bench [OPTIONS]"),
            "{error}"
        );
    }

    #[test]
    fn put_takes_its_value_or_a_value_file_not_both() {
        let put = |args: &[&str]| {
            let argv = ["tpc", "client", "put"].iter().chain(args);
            match Cli::try_parse_from(argv)?.command {
                Some(Command::Client(ClientArgs {
                    op:
                        Some(ClientOp::Put {
                            key,
                            value,
                            value_file,
                        }),
                    ..
                })) => Ok::<_, clap::Error>((key, value, value_file)),
                other => panic!("not client put: {other:?}"),
            }
        };
        assert_eq!(
            put(&["k", ""]).expect("valid"),
            ("k".into(), Some(String::new()), None)
        );
        assert_eq!(
            put(&["k", "--value-file", "-"]).expect("valid"),
            ("k".into(), None, Some(PathBuf::from("-")))
        );
        for bad in [
            &["k"][..],
            &["k", "v", "--value-file", "f"],
            &["--value-file", "f"],
        ] {
            assert!(put(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_value_file_is_utf8_within_the_value_limit() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let limit = tpc::limits::MAX_VALUE_BYTES;
        assert_eq!(read_value_file(&file("empty", b"")), Ok(String::new()));
        assert_eq!(
            read_value_file(&file("line", "é, x\n".as_bytes())),
            Ok("é, x\n".into())
        );
        let most = "v".repeat(limit);
        assert_eq!(read_value_file(&file("most", most.as_bytes())), Ok(most));
        let error = read_value_file(&file("over", &vec![b'v'; limit + 1])).unwrap_err();
        assert!(error.contains("over the value limit of 3 MiB"), "{error}");
        let error = read_value_file(&file("binary", &[0xff, 0xfe])).unwrap_err();
        assert!(error.contains("not UTF-8"), "{error}");
        let error = read_value_file(&dir.path().join("absent")).unwrap_err();
        assert!(error.contains("absent"), "{error}");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
