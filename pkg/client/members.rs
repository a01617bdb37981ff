//! `tpc members list`: the cluster's view (`rpc.Admin/Members`, DESIGN §8), as text for
//! people or as the JSON object DESIGN §8 specifies for scripts.

use std::time::Duration;

use serde_json::json;
use tonic::{Request, Status};

use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address};
use crate::proto::rpc;

/// Asks the leader at `addr` for its view.
pub async fn fetch(addr: &str, timeout: Duration) -> Result<rpc::MembersReply, String> {
    let addr: Address = addr.parse()?;
    let channel = net::connect(&addr, timeout).await?;
    let mut client = rpc::admin_client::AdminClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let mut request = Request::new(rpc::MembersRequest {});
    request.set_timeout(timeout);
    let reply = client
        .members(request)
        .await
        .map_err(|s: Status| super::describe(&s))?;
    Ok(reply.into_inner())
}

/// Asks the leader at `addr` that follower `follower` join the members (`add`) or
/// leave them; the next view's epoch once journaled.
pub async fn change(
    addr: &str,
    follower: &str,
    add: bool,
    timeout: Duration,
) -> Result<u64, String> {
    let addr: Address = addr.parse()?;
    let channel = net::connect(&addr, timeout).await?;
    let mut client = rpc::admin_client::AdminClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let mut request = Request::new(rpc::ChangeMembersRequest {
        address: follower.to_string(),
        add,
    });
    request.set_timeout(timeout);
    let reply = client
        .change_members(request)
        .await
        .map_err(|s: Status| super::describe(&s))?;
    Ok(reply.into_inner().epoch)
}

/// The view as text.
pub fn render_text(view: &rpc::MembersReply) -> String {
    if view.epoch == 0 {
        return format!(
            "no view yet: the leader waits for every follower to tell its member id \
             (replication {})\n",
            view.replication
        );
    }
    let mut out = format!(
        "view {}: {} members, each key on {} of them\n",
        view.epoch,
        view.members.len(),
        (view.replication as usize).min(view.members.len())
    );
    for m in &view.members {
        let keys = match m.keys_counted {
            true => format!("{} keys", m.keys),
            false => "keys not counted yet".to_string(),
        };
        out.push_str(&format!(
            "  {:<28} {:<8} {:<38} {keys}\n",
            m.address, m.state, m.id
        ));
    }
    if view.moving_keys > 0 {
        out.push_str(&format!(
            "changing to this view: {} keys ({} bytes) copied to new replicas so far\n",
            view.moving_keys, view.moving_bytes
        ));
    }
    out
}

/// The view as DESIGN §8's JSON object.
pub fn render_json(view: &rpc::MembersReply) -> String {
    let members: Vec<_> = view
        .members
        .iter()
        .map(|m| json!({ "id": m.id, "address": m.address, "state": m.state }))
        .collect();
    let value = json!({
        "epoch": view.epoch,
        "replication": view.replication,
        "members": members,
        "moving_keys": view.moving_keys,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> rpc::MembersReply {
        rpc::MembersReply {
            epoch: 2,
            replication: 3,
            members: vec![
                rpc::Member {
                    id: "m-1".into(),
                    address: "127.0.0.1:50001".into(),
                    state: "active".into(),
                    keys: 1234,
                    keys_counted: true,
                },
                rpc::Member {
                    id: "m-2".into(),
                    address: "127.0.0.1:50002".into(),
                    state: "down".into(),
                    ..Default::default()
                },
            ],
            moving_keys: 0,
            moving_bytes: 0,
        }
    }

    #[test]
    fn json_is_the_object_design_specifies() {
        let value: serde_json::Value = serde_json::from_str(&render_json(&sample())).unwrap();
        assert_eq!(value["epoch"], 2);
        assert_eq!(value["replication"], 3);
        assert_eq!(value["moving_keys"], 0);
        assert_eq!(value["members"][1]["id"], "m-2");
        assert_eq!(value["members"][1]["address"], "127.0.0.1:50002");
        assert_eq!(value["members"][1]["state"], "down");
        assert_eq!(value.as_object().unwrap().len(), 4, "nothing else");
    }

    #[test]
    fn text_names_every_member_and_says_when_there_is_no_view() {
        let text = render_text(&sample());
        assert!(
            text.contains("view 2: 2 members, each key on 2 of them"),
            "{text}"
        );
        assert!(
            text.contains("127.0.0.1:50002") && text.contains("down"),
            "{text}"
        );
        assert!(
            text.contains("1234 keys") && text.contains("keys not counted yet"),
            "keys per member: {text}"
        );
        let none = rpc::MembersReply {
            replication: 3,
            ..Default::default()
        };
        assert!(render_text(&none).contains("no view yet"));
    }
}
