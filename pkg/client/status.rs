//! `tpc status`: what a leader reports of its cluster (`rpc.Admin/Status`), as text for
//! people or JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tonic::{Request, Status};

use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address};
use crate::proto::rpc;

/// Asks the node at `addr` for its status.
pub async fn fetch(addr: &str, timeout: Duration) -> Result<rpc::StatusReply, String> {
    let addr: Address = addr.parse()?;
    let channel = net::connect(&addr, timeout).await?;
    let mut client = rpc::admin_client::AdminClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let mut request = Request::new(rpc::StatusRequest {});
    request.set_timeout(timeout);
    let reply = client
        .status(request)
        .await
        .map_err(|s: Status| super::describe(&s))?;
    Ok(reply.into_inner())
}

fn age(unix_ms: i64, now: SystemTime) -> Option<Duration> {
    let now_ms = now.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
    (unix_ms > 0).then(|| Duration::from_millis(now_ms.saturating_sub(unix_ms).max(0) as u64))
}

/// The status as text, ages measured from `now`.
pub fn render_text(status: &rpc::StatusReply, now: SystemTime) -> String {
    let mut out = format!(
        "tpc {} {}, cluster {}, epoch {}\n",
        status.version, status.role, status.cluster_id, status.epoch
    );
    if status.role == "standby" {
        // A standby holds the control state only; the active leader has the rest.
        out.push_str(&leaders_line(status));
        if !status.active_leader.is_empty() {
            out.push_str(&format!(
                "the cluster's followers and transactions: tpc status --leader {}\n",
                status.active_leader
            ));
        }
        return out;
    }
    out.push_str(&format!(
        "journal: {} bytes, {} records since its last checkpoint\n",
        status.journal_bytes, status.journal_records
    ));
    let held_by = if status.replication as usize >= status.followers.len() {
        "every follower".to_string()
    } else {
        format!(
            "{} of {} followers",
            status.replication,
            status.followers.len()
        )
    };
    match status.view_epoch {
        0 => out.push_str(&format!(
            "view: none yet (waiting for every follower's member id); each key on {held_by}\n"
        )),
        epoch => out.push_str(&format!("view {epoch}: each key on {held_by}\n")),
    }
    if status.next_view_epoch > 0 {
        out.push_str(&format!(
            "changing to view {}: {} keys ({} bytes) copied to new replicas so far\n",
            status.next_view_epoch, status.moving_keys, status.moving_bytes
        ));
    }
    out.push_str(&leaders_line(status));
    out.push_str(&format!("followers ({}):\n", status.followers.len()));
    for f in &status.followers {
        let state = if f.connected {
            "connected"
        } else {
            "not connected"
        };
        let contact = match age(f.last_contact_unix_ms, now) {
            Some(age) => format!("last contact {:.1} s ago", age.as_secs_f64()),
            None => "no contact yet".to_string(),
        };
        out.push_str(&format!("  {:<28} {:<14} {contact}", f.address, state));
        if f.pending_decisions > 0 {
            out.push_str(&format!(", {} decisions to deliver", f.pending_decisions));
        }
        if f.keys_counted {
            out.push_str(&format!(", {} keys", f.keys));
        }
        if !f.member_id.is_empty() {
            out.push_str(&format!("\n  {:<28} member {}", "", f.member_id));
        }
        if !f.last_error.is_empty() {
            out.push_str(&format!("\n  {:<28} last error: {}", "", f.last_error));
        }
        out.push('\n');
    }
    if status.transactions.is_empty() {
        out.push_str("in-flight transactions: none\n");
    } else {
        out.push_str(&format!(
            "in-flight transactions ({}):\n",
            status.transactions.len()
        ));
        for t in &status.transactions {
            out.push_str(&format!(
                "  {:<10} {:<24} {}",
                t.txid,
                crate::limits::quote_key(&t.key),
                t.phase
            ));
            if !t.awaiting.is_empty() {
                out.push_str(&format!(", waiting for {}", t.awaiting.join(", ")));
            }
            out.push('\n');
        }
    }
    out
}

/// With standby leaders, a line naming each leader's role and the active one.
fn leaders_line(status: &rpc::StatusReply) -> String {
    if status.leaders.is_empty() {
        return String::new();
    }
    let leaders: Vec<String> = status
        .leaders
        .iter()
        .map(|l| format!("{} ({})", l.address, l.role))
        .collect();
    let active = match status.active_leader.as_str() {
        "" => "none (an election is under way)",
        active => active,
    };
    format!(
        "leaders: {}; active: {active}, Raft term {}\n",
        leaders.join(", "),
        status.raft_term
    )
}

/// The status as JSON.
pub fn render_json(status: &rpc::StatusReply) -> String {
    let followers: Vec<_> = status
        .followers
        .iter()
        .map(|f| {
            json!({
                "address": f.address,
                "connected": f.connected,
                "last_contact_unix_ms": (f.last_contact_unix_ms > 0).then_some(f.last_contact_unix_ms),
                "last_error": (!f.last_error.is_empty()).then_some(&f.last_error),
                "pending_decisions": f.pending_decisions,
                "member_id": (!f.member_id.is_empty()).then_some(&f.member_id),
                "keys": f.keys_counted.then_some(f.keys),
            })
        })
        .collect();
    let transactions: Vec<_> = status
        .transactions
        .iter()
        .map(|t| json!({ "txid": t.txid, "key": t.key, "phase": t.phase, "awaiting": t.awaiting }))
        .collect();
    let mut value = json!({
        "version": status.version,
        "role": status.role,
        "cluster_id": status.cluster_id,
        "epoch": status.epoch,
        "view_epoch": status.view_epoch,
        "replication": status.replication,
        "next_view_epoch": status.next_view_epoch,
        "moving_keys": status.moving_keys,
        "journal": { "bytes": status.journal_bytes, "records": status.journal_records },
        "followers": followers,
        "transactions": transactions,
    });
    if !status.leaders.is_empty() {
        let leaders: Vec<_> = status
            .leaders
            .iter()
            .map(|l| json!({ "address": l.address, "role": l.role }))
            .collect();
        value["active_leader"] =
            json!((!status.active_leader.is_empty()).then_some(&status.active_leader));
        value["raft_term"] = json!(status.raft_term);
        value["leaders"] = json!(leaders);
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> rpc::StatusReply {
        rpc::StatusReply {
            version: "0.1.0".into(),
            role: "leader".into(),
            cluster_id: "c".into(),
            epoch: 3,
            followers: vec![
                rpc::FollowerStatus {
                    address: "127.0.0.1:50001".into(),
                    connected: true,
                    last_contact_unix_ms: 1_000,
                    last_error: String::new(),
                    pending_decisions: 0,
                    member_id: "9b2c41e0-7d1f-4a6e-8f3b-2a5d6c7e8f90".into(),
                    keys: 1234,
                    keys_counted: true,
                },
                rpc::FollowerStatus {
                    address: "127.0.0.1:50002".into(),
                    connected: false,
                    last_contact_unix_ms: 0,
                    last_error: "connection refused".into(),
                    pending_decisions: 2,
                    member_id: String::new(),
                    ..Default::default()
                },
            ],
            transactions: vec![rpc::TransactionStatus {
                txid: "3.7".into(),
                key: "k".into(),
                phase: "commit".into(),
                awaiting: vec!["127.0.0.1:50002".into()],
            }],
            journal_bytes: 120,
            journal_records: 4,
            view_epoch: 2,
            replication: 1,
            next_view_epoch: 3,
            moving_keys: 17,
            moving_bytes: 4096,
            ..Default::default()
        }
    }

    #[test]
    fn text_names_every_follower_and_transaction() {
        let text = render_text(&sample(), UNIX_EPOCH + Duration::from_millis(3_500));
        assert!(text.contains("127.0.0.1:50001"), "{text}");
        assert!(text.contains("last contact 2.5 s ago"), "{text}");
        assert!(text.contains("not connected"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(text.contains("2 decisions to deliver"), "{text}");
        assert!(text.contains(", 1234 keys"), "keys per follower: {text}");
        assert!(text.contains("3.7"), "{text}");
        assert!(text.contains("waiting for 127.0.0.1:50002"), "{text}");
        assert!(text.contains("epoch 3"), "{text}");
        assert!(
            text.contains("view 2: each key on 1 of 2 followers")
                && text.contains("changing to view 3: 17 keys (4096 bytes) copied"),
            "{text}"
        );
        let no_view = rpc::StatusReply {
            view_epoch: 0,
            replication: 3,
            ..sample()
        };
        let text = render_text(&no_view, UNIX_EPOCH);
        assert!(text.contains("view: none yet"), "{text}");
        assert!(text.contains("each key on every follower"), "{text}");
        assert!(
            text.contains("member 9b2c41e0-7d1f-4a6e-8f3b-2a5d6c7e8f90"),
            "{text}"
        );
    }

    #[test]
    fn json_round_trips_through_a_parser() {
        let value: serde_json::Value = serde_json::from_str(&render_json(&sample())).unwrap();
        assert_eq!(value["followers"][1]["connected"], false);
        assert_eq!(value["followers"][0]["last_error"], serde_json::Value::Null);
        assert_eq!(value["transactions"][0]["awaiting"][0], "127.0.0.1:50002");
        assert_eq!(value["journal"]["records"], 4);
        assert_eq!(value["view_epoch"], 2);
        assert_eq!(value["replication"], 1);
        assert_eq!(
            value["followers"][0]["member_id"],
            "9b2c41e0-7d1f-4a6e-8f3b-2a5d6c7e8f90"
        );
        assert_eq!(value["followers"][1]["member_id"], serde_json::Value::Null);
        assert_eq!(value["followers"][0]["keys"], 1234);
        assert_eq!(value["followers"][1]["keys"], serde_json::Value::Null);
        assert_eq!(
            value["leaders"],
            serde_json::Value::Null,
            "one leader: no leaders"
        );
    }

    #[test]
    fn with_standby_leaders_the_status_names_each_role_and_the_active_one() {
        let leaders = vec![
            rpc::LeaderStatus {
                address: "127.0.0.1:50000".into(),
                role: "active".into(),
            },
            rpc::LeaderStatus {
                address: "127.0.0.1:50010".into(),
                role: "standby".into(),
            },
        ];
        let status = rpc::StatusReply {
            role: "standby".into(),
            active_leader: "127.0.0.1:50000".into(),
            raft_term: 4,
            leaders,
            ..sample()
        };
        let value: serde_json::Value = serde_json::from_str(&render_json(&status)).unwrap();
        assert_eq!(value["role"], "standby");
        assert_eq!(value["active_leader"], "127.0.0.1:50000");
        assert_eq!(value["leaders"][1]["role"], "standby");
        assert_eq!(value["raft_term"], 4);
        let text = render_text(&status, UNIX_EPOCH);
        assert!(
            text.contains("leaders: 127.0.0.1:50000 (active), 127.0.0.1:50010 (standby); active: 127.0.0.1:50000, Raft term 4"),
            "{text}"
        );
        assert!(
            text.contains("tpc status --leader 127.0.0.1:50000") && !text.contains("view"),
            "a standby points at the active leader for the rest: {text}"
        );
        let active = rpc::StatusReply {
            role: "active".into(),
            ..status.clone()
        };
        let text = render_text(&active, UNIX_EPOCH);
        assert!(
            text.contains("Raft term 4") && text.contains("view 2"),
            "{text}"
        );
        let electing = rpc::StatusReply {
            active_leader: String::new(),
            ..status
        };
        let value: serde_json::Value = serde_json::from_str(&render_json(&electing)).unwrap();
        assert_eq!(value["active_leader"], serde_json::Value::Null);
        assert!(render_text(&electing, UNIX_EPOCH).contains("active: none"));
    }
}
