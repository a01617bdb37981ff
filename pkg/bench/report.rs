//! What a bench run measured, and how it is shown: per-operation latency histograms,
//! error counts and refused compare-and-swaps ([`OpStats`]), a client task's or the whole run's collection of them
//! ([`Tally`]), and the final [`Report`] as text for people or JSON for scripts.
//!
//! Everything here is pure: tasks fill their own tallies, the runner merges them once at
//! the end, and rendering reads the merged result.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tonic::{Code, Status};

use super::{Config, Workload, HOT_KEY};

/// The highest latency a histogram tells apart, in microseconds (60 s); slower requests
/// are recorded as this. The per-request timeout keeps real ones well below it.
const HIGHEST_LATENCY_US: u64 = 60_000_000;
/// Significant digits the histograms keep: 3 means within 0.1% at any latency.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The kind of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// `KeyValueAPI/Get`.
    Get,
    /// `KeyValueAPI/Put`.
    Put,
    /// `KeyValueAPI/Txn` putting several keys.
    Txn,
    /// `KeyValueAPI/Txn` getting several keys (read-only).
    TxnGet,
    /// `KeyValueAPI/Txn` as a compare-and-swap of the hot key.
    Cas,
}

impl OpKind {
    /// The lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Txn => "txn",
            OpKind::TxnGet => "txn-get",
            OpKind::Cas => "cas",
        }
    }
}

/// How often one status code was seen, with the message of its first occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCount {
    /// Failed requests with this code.
    pub count: u64,
    /// The server's (or transport's) message of the first one, to show what went wrong.
    pub example: String,
}

/// The results of one kind of request: latencies of the successful ones (microseconds),
/// failures by gRPC status code, and refused compare-and-swaps (answered, but not
/// successful: in neither).
#[derive(Clone, Debug)]
pub struct OpStats {
    latency_us: Histogram<u64>,
    errors: BTreeMap<&'static str, ErrorCount>,
    conflicts: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats::new()
    }
}

impl OpStats {
    /// Empty stats.
    pub fn new() -> OpStats {
        let latency_us = Histogram::new_with_bounds(1, HIGHEST_LATENCY_US, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        OpStats {
            latency_us,
            errors: BTreeMap::new(),
            conflicts: 0,
        }
    }

    /// Records a successful request that took `latency`.
    pub fn record_ok(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us);
    }

    /// Records a failed request.
    pub fn record_error(&mut self, status: &Status) {
        self.errors
            .entry(code_name(status.code()))
            .or_insert_with(|| ErrorCount {
                count: 0,
                example: status.message().to_string(),
            })
            .count += 1;
    }

    /// Records a compare-and-swap refused because its compare failed.
    pub fn record_conflict(&mut self) {
        self.conflicts += 1;
    }

    /// Adds `other`'s requests to these.
    pub fn merge(&mut self, other: &OpStats) {
        self.conflicts += other.conflicts;
        // Every histogram here has the same bounds, which is all `add` needs.
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with equal bounds merge");
        for (code, theirs) in &other.errors {
            let ours = self.errors.entry(code).or_insert_with(|| ErrorCount {
                count: 0,
                example: theirs.example.clone(),
            });
            ours.count += theirs.count;
        }
    }

    /// Successful requests.
    pub fn ops(&self) -> u64 {
        self.latency_us.len()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }

    /// Refused compare-and-swaps.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Failures by status code name (`UNAVAILABLE`).
    pub fn errors(&self) -> &BTreeMap<&'static str, ErrorCount> {
        &self.errors
    }

    /// Latency percentiles of the successful requests; `None` if there were none.
    pub fn latency(&self) -> Option<Latency> {
        if self.latency_us.is_empty() {
            return None;
        }
        let h = &self.latency_us;
        Some(Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The results of a set of requests (one client task's, or the whole run's), per kind.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    by_kind: BTreeMap<OpKind, OpStats>,
}

impl Tally {
    /// An empty tally with room for the kinds `workload` sends (only those: each
    /// histogram is some 140 KB).
    pub fn for_workload(workload: Workload) -> Tally {
        Tally {
            by_kind: workload
                .kinds()
                .iter()
                .map(|&k| (k, OpStats::new()))
                .collect(),
        }
    }

    /// The stats of `kind`, created if absent.
    pub fn of(&mut self, kind: OpKind) -> &mut OpStats {
        self.by_kind.entry(kind).or_default()
    }

    /// Adds `other`'s requests to these.
    pub fn merge(&mut self, other: &Tally) {
        for (&kind, stats) in &other.by_kind {
            self.of(kind).merge(stats);
        }
    }

    /// The stats per kind, in kind order.
    pub fn by_kind(&self) -> &BTreeMap<OpKind, OpStats> {
        &self.by_kind
    }

    /// All kinds together.
    pub fn total(&self) -> OpStats {
        let mut total = OpStats::new();
        for stats in self.by_kind.values() {
            total.merge(stats);
        }
        total
    }
}

/// A finished run: what was asked, how long it took, what was measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The run's settings.
    pub config: Config,
    /// How long preloading the keys took, if it was done.
    pub preload: Option<Duration>,
    /// `cas`: the hot key's counter before the run.
    pub hot_key_start: Option<u64>,
    /// From the first request to the last answer (in-flight requests included).
    pub elapsed: Duration,
    /// Every client task's results, merged.
    pub tally: Tally,
}

impl Report {
    fn per_second(&self, ops: u64) -> f64 {
        ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The report as one JSON object: `ops`, `seconds`, `ops_per_sec`, `latency_us`
/// (`p50`, `p90`, `p99`, `p999`, `max`; `null` when nothing succeeded), `errors`
/// (`{code: count}`), the settings (`txn_keys` for `txn` and `txn-get`), for `mixed` a
/// `per_op` breakdown of the same, and for `cas` a `cas` object: the hot `key`, its
/// counter's `start`, the `conflicts` and `conflicts_per_sec`.
pub fn render_json(report: &Report) -> Value {
    let config = &report.config;
    let mut object = json!({
        "leader": config.leader.to_string(),
        "op": config.workload.name(),
        "clients": config.clients,
        "connections": config.connections,
        "value_size": config.value_size,
        "keyspace": config.keyspace,
        "seconds": round3(report.elapsed.as_secs_f64()),
    });
    let fields = object.as_object_mut().expect("a JSON object");
    if config.workload.uses_txn_keys() {
        fields.insert("txn_keys".into(), config.txn_keys.into());
    }
    let total = report.tally.total();
    fields.extend(stats_json(report, &total));
    if config.workload == Workload::Cas {
        fields.insert(
            "cas".into(),
            json!({
                "key": HOT_KEY,
                "start": report.hot_key_start,
                "conflicts": total.conflicts(),
                "conflicts_per_sec": round3(report.per_second(total.conflicts())),
            }),
        );
    }
    if config.workload == Workload::Mixed {
        let per_op: Map<String, Value> = report
            .tally
            .by_kind()
            .iter()
            .map(|(kind, stats)| (kind.name().to_string(), stats_json(report, stats).into()))
            .collect();
        fields.insert("per_op".into(), per_op.into());
    }
    object
}

fn stats_json(report: &Report, stats: &OpStats) -> Map<String, Value> {
    let latency = stats
        .latency()
        .map(|l| json!({"p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999, "max": l.max}));
    let errors: Map<String, Value> = stats
        .errors()
        .iter()
        .map(|(code, e)| (code.to_string(), e.count.into()))
        .collect();
    let mut fields = Map::new();
    fields.insert("ops".into(), stats.ops().into());
    fields.insert(
        "ops_per_sec".into(),
        round3(report.per_second(stats.ops())).into(),
    );
    fields.insert("latency_us".into(), latency.into());
    fields.insert("errors".into(), errors.into());
    fields
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The report as a few lines of text: the settings, a table of throughput and latency
/// (one row per kind of request, and a total row for `mixed`), and the errors.
pub fn render_text(report: &Report) -> String {
    let config = &report.config;
    let mut out = format!(
        "tpc bench: {} against {}: {} clients on {} connections",
        config.workload.describe(config.txn_keys),
        config.leader,
        config.clients,
        config.connections,
    );
    if config.workload.uses_keyspace() {
        let _ = write!(
            out,
            ", {} keys, {}-byte values",
            config.keyspace, config.value_size
        );
    }
    out.push('\n');
    if let Some(start) = report.hot_key_start {
        let _ = writeln!(
            out,
            "hot key {HOT_KEY}: counter at {start} before the run, +1 per swap"
        );
    }
    if let Some(preload) = report.preload {
        let _ = writeln!(
            out,
            "preloaded {} keys in {:.2} s",
            config.keyspace,
            preload.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "ran {:.2} s (asked {} s)\n",
        report.elapsed.as_secs_f64(),
        config.duration.as_secs_f64()
    );
    let total = report.tally.total();
    let mut rows: Vec<(&str, &OpStats)> = report
        .tally
        .by_kind()
        .iter()
        .map(|(kind, stats)| (kind.name(), stats))
        .collect();
    if rows.len() > 1 {
        rows.push(("all", &total));
    }
    let width = rows.iter().map(|(name, _)| name.len()).fold(5, usize::max);
    let _ = writeln!(
        out,
        "{:<width$} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "op", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (name, stats) in rows {
        let _ = write!(
            out,
            "{name:<width$} {:>10} {:>10.1}",
            stats.ops(),
            report.per_second(stats.ops())
        );
        match stats.latency() {
            Some(l) => {
                for us in [l.p50, l.p90, l.p99, l.p999, l.max] {
                    let _ = write!(out, " {:>10.3}", us as f64 / 1000.0);
                }
            }
            None => {
                for _ in 0..5 {
                    let _ = write!(out, " {:>10}", "-");
                }
            }
        }
        out.push('\n');
    }
    out.push('\n');
    if config.workload == Workload::Cas {
        let _ = writeln!(
            out,
            "cas conflicts: {} ({:.1}/s): swaps refused because another client's came \
             first, each retried with the value its answer read",
            total.conflicts(),
            report.per_second(total.conflicts())
        );
    }
    if total.failed() == 0 {
        out.push_str("errors: none\n");
    } else {
        let _ = writeln!(
            out,
            "errors: {} requests failed (not in ops or latency):",
            total.failed()
        );
        for (code, e) in total.errors() {
            let _ = write!(out, "  {code}: {}", e.count);
            if !e.example.is_empty() {
                let _ = write!(out, " (first: {:?})", e.example);
            }
            out.push('\n');
        }
    }
    out
}

/// The canonical gRPC name of `code`, as in `UNAVAILABLE`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Address;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(workload: Workload) -> Config {
        Config {
            leader: Address::Tcp("127.0.0.1:50000".into()),
            clients: 2,
            connections: 2,
            duration: Duration::from_secs(2),
            workload,
            value_size: 100,
            keyspace: 1000,
            txn_keys: 4,
            timeout: Duration::from_secs(5),
            show_progress: false,
        }
    }

    fn report(workload: Workload, tally: Tally) -> Report {
        Report {
            config: config(workload),
            preload: None,
            hot_key_start: None,
            elapsed: Duration::from_secs(2),
            tally,
        }
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut stats = OpStats::new();
        for i in 1..=1000 {
            stats.record_ok(Duration::from_micros(i));
        }
        assert_eq!(stats.ops(), 1000);
        assert_eq!(
            stats.latency(),
            Some(Latency {
                p50: 500,
                p90: 900,
                p99: 990,
                p999: 999,
                max: 1000
            })
        );
        assert_eq!(OpStats::new().latency(), None);
    }

    #[test]
    fn latencies_beyond_the_histogram_are_clamped_not_lost() {
        let mut stats = OpStats::new();
        stats.record_ok(Duration::from_secs(3600));
        assert_eq!(stats.ops(), 1);
        let max = stats.latency().expect("one latency").max;
        assert!(max >= HIGHEST_LATENCY_US, "{max}");
    }

    #[test]
    fn task_tallies_merge_into_totals_per_kind_and_overall() {
        let mut a = Tally::for_workload(Workload::Mixed);
        a.of(OpKind::Get).record_ok(ms(1));
        a.of(OpKind::Put).record_ok(ms(3));
        a.of(OpKind::Put)
            .record_error(&Status::unavailable("follower f1 did not vote"));
        let mut b = Tally::for_workload(Workload::Mixed);
        b.of(OpKind::Get).record_ok(ms(2));
        b.of(OpKind::Put)
            .record_error(&Status::unavailable("later"));
        b.of(OpKind::Get)
            .record_error(&Status::not_found("key not found"));

        let mut merged = Tally::default();
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.by_kind()[&OpKind::Get].ops(), 2);
        assert_eq!(merged.by_kind()[&OpKind::Put].ops(), 1);
        let total = merged.total();
        assert_eq!((total.ops(), total.failed()), (3, 3));
        assert_eq!(
            total.errors()["UNAVAILABLE"],
            ErrorCount {
                count: 2,
                example: "follower f1 did not vote".into()
            }
        );
        assert_eq!(total.errors()["NOT_FOUND"].count, 1);
        assert_eq!(total.latency().map(|l| l.max), Some(3000 + 1)); // within 0.1%
    }

    #[test]
    fn json_has_totals_latency_and_errors_by_code() {
        let mut tally = Tally::for_workload(Workload::Put);
        for _ in 0..10 {
            tally.of(OpKind::Put).record_ok(ms(2));
        }
        tally
            .of(OpKind::Put)
            .record_error(&Status::aborted("follower voted no"));
        let json = render_json(&report(Workload::Put, tally));
        assert_eq!(json["op"], "put");
        assert_eq!(json["ops"], 10);
        assert_eq!(json["seconds"], 2.0);
        assert_eq!(json["ops_per_sec"], 5.0);
        assert_eq!(json["latency_us"]["p50"], 2000);
        assert_eq!(json["latency_us"]["max"], 2000);
        assert_eq!(json["errors"], json!({"ABORTED": 1}));
        assert!(json.get("per_op").is_none(), "{json}");
    }

    #[test]
    fn json_of_a_mixed_run_breaks_down_per_op_and_shows_null_latency_for_none() {
        let mut tally = Tally::for_workload(Workload::Mixed);
        tally.of(OpKind::Get).record_ok(ms(1));
        tally
            .of(OpKind::Put)
            .record_error(&Status::unavailable("no quorum"));
        let json = render_json(&report(Workload::Mixed, tally));
        assert_eq!(json["ops"], 1);
        assert_eq!(json["per_op"]["get"]["ops"], 1);
        assert_eq!(json["per_op"]["get"]["errors"], json!({}));
        assert_eq!(json["per_op"]["put"]["ops"], 0);
        assert_eq!(json["per_op"]["put"]["latency_us"], Value::Null);
        assert_eq!(json["per_op"]["put"]["errors"], json!({"UNAVAILABLE": 1}));
        assert_eq!(json["errors"], json!({"UNAVAILABLE": 1}));
    }

    #[test]
    fn text_shows_a_row_per_kind_a_total_for_mixed_and_the_errors() {
        let mut tally = Tally::for_workload(Workload::Mixed);
        tally.of(OpKind::Get).record_ok(ms(1));
        tally.of(OpKind::Put).record_ok(ms(4));
        tally
            .of(OpKind::Put)
            .record_error(&Status::unavailable("no quorum"));
        let text = render_text(&report(Workload::Mixed, tally));
        let expected = "\
tpc bench: mixed (50% get, 50% put) against 127.0.0.1:50000: 2 clients on 2 connections, 1000 keys, 100-byte values
ran 2.00 s (asked 2 s)

op           ops      ops/s     p50 ms     p90 ms     p99 ms   p99.9 ms     max ms
get            1        0.5      1.000      1.000      1.000      1.000      1.000
put            1        0.5      4.001      4.001      4.001      4.001      4.001
all            2        1.0      1.000      4.001      4.001      4.001      4.001

errors: 1 requests failed (not in ops or latency):
  UNAVAILABLE: 1 (first: \"no quorum\")
";
        assert_eq!(text, expected);
    }

    #[test]
    fn text_of_a_clean_single_kind_run_has_one_row_and_no_errors() {
        let mut tally = Tally::for_workload(Workload::Get);
        tally.of(OpKind::Get).record_ok(ms(1));
        let mut report = report(Workload::Get, tally);
        report.preload = Some(Duration::from_millis(250));
        let text = render_text(&report);
        assert!(text.contains("preloaded 1000 keys in 0.25 s\n"), "{text}");
        assert!(text.contains("\nget "), "{text}");
        assert!(!text.contains("\nall "), "{text}");
        assert!(!text.contains("\nput "), "{text}");
        assert!(text.ends_with("errors: none\n"), "{text}");
    }

    #[test]
    fn text_of_a_transaction_run_names_its_size_and_widens_the_op_column() {
        let mut tally = Tally::for_workload(Workload::TxnGet);
        tally.of(OpKind::TxnGet).record_ok(ms(2));
        let mut report = report(Workload::TxnGet, tally);
        report.config.txn_keys = 8;
        report.preload = Some(Duration::from_millis(500));
        let expected = "\
tpc bench: txn-get (8 keys) against 127.0.0.1:50000: 2 clients on 2 connections, 1000 keys, 100-byte values
preloaded 1000 keys in 0.50 s
ran 2.00 s (asked 2 s)

op             ops      ops/s     p50 ms     p90 ms     p99 ms   p99.9 ms     max ms
txn-get          1        0.5      2.000      2.000      2.000      2.000      2.000

errors: none
";
        assert_eq!(render_text(&report), expected);
        let json = render_json(&report);
        assert_eq!(json["op"], "txn-get");
        assert_eq!(json["txn_keys"], 8);
        assert!(json.get("cas").is_none(), "{json}");
        let put = render_json(&self::report(Workload::Put, Tally::default()));
        assert!(put.get("txn_keys").is_none(), "{put}");
    }

    #[test]
    fn a_cas_run_reports_swaps_as_ops_and_conflicts_apart() {
        let mut tally = Tally::for_workload(Workload::Cas);
        let mut other = Tally::for_workload(Workload::Cas);
        for _ in 0..3 {
            tally.of(OpKind::Cas).record_ok(ms(1));
            other.of(OpKind::Cas).record_conflict();
        }
        other.of(OpKind::Cas).record_conflict();
        tally.merge(&other);
        let stats = &tally.by_kind()[&OpKind::Cas];
        assert_eq!((stats.ops(), stats.conflicts(), stats.failed()), (3, 4, 0));

        let mut report = report(Workload::Cas, tally);
        report.hot_key_start = Some(1000);
        let expected = "\
tpc bench: cas (one hot key, bench-cas) against 127.0.0.1:50000: 2 clients on 2 connections
hot key bench-cas: counter at 1000 before the run, +1 per swap
ran 2.00 s (asked 2 s)

op           ops      ops/s     p50 ms     p90 ms     p99 ms   p99.9 ms     max ms
cas            3        1.5      1.000      1.000      1.000      1.000      1.000

cas conflicts: 4 (2.0/s): swaps refused because another client's came first, each retried with the value its answer read
errors: none
";
        assert_eq!(render_text(&report), expected);
        let json = render_json(&report);
        assert_eq!(json["op"], "cas");
        assert_eq!(json["ops"], 3);
        assert_eq!(
            json["cas"],
            json!({"key": "bench-cas", "start": 1000, "conflicts": 4, "conflicts_per_sec": 2.0})
        );
        assert!(json.get("txn_keys").is_none(), "{json}");
    }

    #[test]
    fn status_codes_have_their_grpc_names() {
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
    }
}
