//! A mock leader's raw `TPCMsg` stream to a real follower, for tests that need a
//! leader misbehaving on purpose (dying at a chosen step, sending what it likes).

#![allow(dead_code)]

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use tpc::net::{self, Address};
use tpc::proto::rpc::two_phase_commit_client::TwoPhaseCommitClient;
use tpc::proto::rpc::{Action, LeaderMsg, Response};

/// The bound on every wait: generous, only reached when a test fails.
const WAIT: Duration = Duration::from_secs(10);

/// A mock leader's raw `TPCMsg` stream to a real follower.
pub struct Raw {
    requests: mpsc::UnboundedSender<LeaderMsg>,
    responses: Streaming<Response>,
}

impl Raw {
    pub async fn open(addr: &Address) -> Raw {
        let channel = net::connect(addr, WAIT).await.expect("connect");
        let mut client = TwoPhaseCommitClient::new(channel);
        let (requests, rx) = mpsc::unbounded_channel();
        let responses =
            tokio::time::timeout(WAIT, client.tpc_msg(UnboundedReceiverStream::new(rx)))
                .await
                .expect("stream opens within the bound")
                .expect("stream opens")
                .into_inner();
        Raw {
            requests,
            responses,
        }
    }

    /// Sends one message and returns its answer, or the status that ended the stream.
    pub async fn ask(&mut self, msg: LeaderMsg) -> Result<Response, Status> {
        self.requests
            .send(msg.clone())
            .expect("request stream open");
        match tokio::time::timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => panic!("the follower ended the stream without answering {msg:?}"),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no answer to {msg:?} within {WAIT:?}"),
        }
    }

    /// Sends one message and expects `action` with the txid echoed.
    pub async fn expect(&mut self, msg: LeaderMsg, action: Action) -> Response {
        let txid = msg.txid.clone();
        let what = format!("{msg:?}");
        let response = self
            .ask(msg)
            .await
            .unwrap_or_else(|status| panic!("{what}: stream ended with {status:?}"));
        assert_eq!(
            response.action,
            action as i32,
            "{what}: answered {:?}, expected {action:?}",
            Action::try_from(response.action)
        );
        assert_eq!(response.txid, txid, "{what}: txid not echoed");
        response
    }
}
