//! Catching up while the members change (DESIGN §8), follower to follower.
//!
//! When the leader hands a follower a *next* view, the follower takes the writes of the
//! keys it holds in that view at once (they are in the transactions' parts), and fills
//! in what those keys held before from the members of the view in force:
//!
//! - **The gainer** ([`run`]) asks every other member of the view in force, over
//!   `rpc.FollowerReads/Copy`, for the keys it gains; the state owner writes a copied
//!   key only under [`FollowerCore::copied`]'s rule (never over a newer version, never
//!   over a key a decision wrote since the next view was taken), then the store is
//!   synced and the follower reports itself caught up (`rpc.FollowerReads/CatchUp`,
//!   which the leader asks, `view_change.rs`). A member that stays in the next view must
//!   answer: its keys may have no other live copy; one that is leaving is given up after
//!   [`LEAVING_ATTEMPTS`] failed tries (it may be the dead member being removed; every
//!   key it held has other replicas that stay, unless R members were removed at once).
//!   A member replaced by a new process at its address while the change is under way
//!   becomes a leaving one: the leader revises the change (`Membership::replacements`).
//!   A crash starts the catch-up over. A member that already holds every key
//!   ([`FollowerCore::holds_every_key_now`]) has nothing to copy and asks no one.
//! - **The source** ([`copy_stream`]) walks its store and streams the keys
//!   [`FollowerCore::copies_to`] names, in batches, through a bounded channel: the copy
//!   goes as fast as the gainer takes it. A key a prepared transaction holds is sent
//!   only once it is decided, so the copy includes every decision of the view in force
//!   (after taking the next view, this follower prepares no more of those).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::follower_core::FollowerCore;
use super::follower_state::{Command, Shared};
use crate::limits::{self, MAX_GRPC_MESSAGE_BYTES};
use crate::net::Address;
use crate::placement::MemberId;
use crate::proto::rpc;
use crate::txid::TxId;

/// A batch of a copy stream ends after this many keys, or bytes.
const BATCH_KEYS: usize = 512;
const BATCH_BYTES: usize = 1 << 20;
/// Batches a source keeps ahead of the gainer: the backpressure of a copy.
const STREAM_DEPTH: usize = 4;
/// A leaving member that fails this many times in a row is given up on (at once if it
/// answers that it is not the member).
pub const LEAVING_ATTEMPTS: u32 = 5;
/// How long a source waits, at most, for the prepared transactions holding keys it
/// must copy to be decided.
const LOCKED_WAIT: Duration = Duration::from_secs(600);

/// A copy stream, as `rpc.FollowerReads/Copy` answers it.
pub type CopyStream = ReceiverStream<Result<rpc::CopyBatch, Status>>;

/// Where this follower's catch-up stands, for `rpc.FollowerReads/CatchUp`.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// The next view's epoch it is catching up on.
    pub epoch: u64,
    pub done: bool,
    pub keys: u64,
    pub bytes: u64,
    pub waiting_for: String,
}

/// The catch-up's progress, shared with the RPC handlers.
#[derive(Default)]
pub struct CatchUp {
    progress: Mutex<Progress>,
}

impl CatchUp {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// `rpc.FollowerReads/CatchUp`: whether the catch-up on the next view of `epoch` is
    /// done.
    pub fn reply(&self, epoch: u64) -> rpc::CatchUpReply {
        let progress = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if progress.epoch != epoch {
            return rpc::CatchUpReply {
                waiting_for: format!("this follower has not started catching up on view {epoch}"),
                ..Default::default()
            };
        }
        rpc::CatchUpReply {
            done: progress.done,
            keys: progress.keys,
            bytes: progress.bytes,
            waiting_for: progress.waiting_for,
        }
    }
}

// ------------------------------------------------------------------ the source

/// `rpc.FollowerReads/Copy`: streams to member `to` the keys it gains in the next view
/// of `epoch`. Refused (FAILED_PRECONDITION) if this follower cannot serve that copy.
pub fn copy_stream(shared: Arc<Shared>, to: String, epoch: u64) -> Result<CopyStream, Status> {
    if !shared.ready.load(Ordering::Acquire) {
        return Err(Status::unavailable("follower is replaying its journal"));
    }
    let to = MemberId(to);
    {
        let core = shared.core();
        if let (Some(view), false) = (core.view(), core.is_member_in_force()) {
            return Err(Status::permission_denied(format!(
                "this follower ({}) is not a member of view {}: it holds no keys to copy",
                core.member_id().unwrap_or_default(),
                view.epoch
            )));
        }
        core.copies_to(&to, epoch, "")
            .map_err(Status::failed_precondition)?;
    }
    let (out, stream) = mpsc::channel(STREAM_DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(status) = walk(&shared, &to, epoch, &out) {
            let _ = out.blocking_send(Err(status));
        }
    });
    Ok(ReceiverStream::new(stream))
}

/// Walks the store and sends the keys `to` gains; keys a prepared transaction holds are
/// sent once decided. Returns early (Ok) if the gainer went away.
fn walk(
    shared: &Shared,
    to: &MemberId,
    epoch: u64,
    out: &mpsc::Sender<Result<rpc::CopyBatch, Status>>,
) -> Result<(), Status> {
    let keys = shared
        .kv
        .keys()
        .map_err(|e| Status::internal(format!("listing the store failed: {e}")))?;
    let mut batch = Batch::default();
    let Some(mut locked) = pass(shared, to, epoch, keys, &mut batch, out)? else {
        return Ok(());
    };
    let started = Instant::now();
    while !locked.is_empty() {
        if started.elapsed() > LOCKED_WAIT {
            return Err(Status::unavailable(format!(
                "{} keys stayed locked by undecided transactions for {LOCKED_WAIT:?}",
                locked.len()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
        let Some(still) = pass(shared, to, epoch, locked, &mut batch, out)? else {
            return Ok(());
        };
        locked = still;
    }
    if !batch.keys.is_empty() {
        let _ = out.blocking_send(Ok(batch.take()));
    }
    Ok(())
}

/// One pass over `keys`: sends what `to` gains into `batch` (sending full batches);
/// returns the keys still locked, or `None` if the gainer went away.
fn pass(
    shared: &Shared,
    to: &MemberId,
    epoch: u64,
    keys: Vec<String>,
    batch: &mut Batch,
    out: &mpsc::Sender<Result<rpc::CopyBatch, Status>>,
) -> Result<Option<Vec<String>>, Status> {
    let mut locked = Vec::new();
    for key in keys {
        match copy_one(shared, to, epoch, &key)? {
            Copy::Skip => {}
            Copy::Locked => locked.push(key),
            Copy::Send(entry) => {
                if batch.push(entry) && out.blocking_send(Ok(batch.take())).is_err() {
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(locked))
}

enum Copy {
    Skip,
    Locked,
    Send(rpc::CopiedKey),
}

/// Whether `key` goes to `to`, read under the core's lock: no decision is applied to
/// it meanwhile.
fn copy_one(shared: &Shared, to: &MemberId, epoch: u64, key: &str) -> Result<Copy, Status> {
    let core = shared.core();
    if !core
        .copies_to(to, epoch, key)
        .map_err(Status::failed_precondition)?
    {
        return Ok(Copy::Skip);
    }
    if core.is_locked(key) {
        return Ok(Copy::Locked);
    }
    Ok(match shared.read(key) {
        Some(held) => Copy::Send(rpc::CopiedKey {
            key: key.to_string(),
            value: held.value,
            version: held.version.to_string(),
        }),
        None => Copy::Skip,
    })
}

#[derive(Default)]
struct Batch {
    keys: Vec<rpc::CopiedKey>,
    bytes: usize,
}

impl Batch {
    /// Adds `entry`; true if the batch is full.
    fn push(&mut self, entry: rpc::CopiedKey) -> bool {
        self.bytes += entry.key.len() + entry.value.len() + entry.version.len();
        self.keys.push(entry);
        self.keys.len() >= BATCH_KEYS || self.bytes >= BATCH_BYTES
    }

    fn take(&mut self) -> rpc::CopyBatch {
        self.bytes = 0;
        rpc::CopyBatch {
            keys: std::mem::take(&mut self.keys),
        }
    }
}

// ------------------------------------------------------------------ the gainer

/// Catches up on every next view this follower is handed, until the process ends.
pub async fn run(shared: Arc<Shared>, inbox: mpsc::Sender<Command>) {
    let catch_up = &shared.catch_up;
    let mut next_view = shared.next_view.subscribe();
    loop {
        let epoch = *next_view.borrow_and_update();
        if let Some(epoch) = epoch {
            tokio::select! {
                _ = catch_up_on(&shared, catch_up, &inbox, epoch) => {}
                _ = next_view.changed() => continue,
            }
        }
        if next_view.changed().await.is_err() {
            return;
        }
    }
}

/// Copies, from every other member of the view in force, the keys this follower gains
/// in the next view of `epoch`; then syncs the store and reports itself caught up.
async fn catch_up_on(
    shared: &Arc<Shared>,
    catch_up: &CatchUp,
    inbox: &mpsc::Sender<Command>,
    epoch: u64,
) {
    let started = Instant::now();
    catch_up.update(|p| {
        *p = Progress {
            epoch,
            ..Progress::default()
        }
    });
    let (me, sources) = {
        let core = shared.core();
        let me = core.member_id().map(str::to_string).unwrap_or_default();
        let next: Vec<(MemberId, String)> = core
            .next_view()
            .map(|v| v.members.clone())
            .unwrap_or_default();
        // A member this follower replaced (it restarted empty) was at its own address.
        let my_address = next.iter().find(|(id, _)| id.0 == me).map(|(_, a)| a);
        let sources: Vec<(String, bool)> = core
            .view()
            .filter(|_| !core.holds_every_key_now())
            .map(|v| {
                v.members
                    .iter()
                    .filter(|(id, address)| id.0 != me && Some(address) != my_address)
                    .map(|(id, address)| {
                        let leaving = !next.iter().any(|(next_id, _)| next_id == id);
                        (address.clone(), leaving)
                    })
                    .collect()
            })
            .unwrap_or_default();
        (me, sources)
    };
    tracing::info!(
        epoch,
        sources = sources.len(),
        "catching up on the next view"
    );
    for (address, leaving) in sources {
        let mut attempts = 0;
        loop {
            match copy_from(catch_up, inbox, &address, &me, epoch).await {
                Ok(()) => break,
                Err((code, why)) => {
                    attempts += 1;
                    catch_up.update(|p| p.waiting_for = format!("{address}: {why}"));
                    // PERMISSION_DENIED: another process answers there, the member is
                    // gone for good (a replaced or emptied follower).
                    let gone = code == Code::PermissionDenied;
                    if leaving && (gone || attempts >= LEAVING_ATTEMPTS) {
                        tracing::warn!(source = %address, error = %why, "a leaving member could not be copied from; its keys come from their other replicas");
                        break;
                    }
                    tracing::info!(source = %address, error = %why, attempts, "copy failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempts.min(20))))
                        .await;
                }
            }
        }
    }
    let kv = shared.clone();
    match tokio::task::spawn_blocking(move || kv.kv.sync()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            catch_up.update(|p| p.waiting_for = format!("syncing the store failed: {e}"));
            return;
        }
        Err(_) => return,
    }
    let (keys, bytes) = {
        let mut done = (0, 0);
        catch_up.update(|p| {
            p.done = true;
            p.waiting_for.clear();
            done = (p.keys, p.bytes);
        });
        done
    };
    crate::metrics::CATCH_UP_SECONDS.observe(started.elapsed().as_secs_f64());
    tracing::info!(epoch, keys, bytes, elapsed = ?started.elapsed(), "caught up on the next view");
}

/// Copies from the member at `address`: every batch goes through the state owner.
async fn copy_from(
    catch_up: &CatchUp,
    inbox: &mpsc::Sender<Command>,
    address: &str,
    me: &str,
    epoch: u64,
) -> Result<(), (Code, String)> {
    let unavailable = |why: String| (Code::Unavailable, why);
    let status = |s: Status| (s.code(), s.message().to_string());
    let addr: Address = address.parse().map_err(unavailable)?;
    let channel = crate::net::connect(&addr, Duration::from_secs(2))
        .await
        .map_err(unavailable)?;
    let mut client = rpc::follower_reads_client::FollowerReadsClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let mut stream = client
        .copy(rpc::CopyRequest {
            view_epoch: epoch,
            member_id: me.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(batch) = stream.message().await.map_err(status)? {
        let entries = entries_of(batch).map_err(|why| (Code::InvalidArgument, why))?;
        let bytes: u64 = entries
            .iter()
            .map(|(k, v, _)| (k.len() + v.len()) as u64)
            .sum();
        let (reply, written) = oneshot::channel();
        inbox
            .send(Command::Copied {
                epoch,
                entries,
                reply,
            })
            .await
            .map_err(|_| unavailable("the follower is stopping".into()))?;
        let written = written
            .await
            .map_err(|_| unavailable("the follower is stopping".into()))?
            .map_err(unavailable)?;
        crate::metrics::CATCH_UP_KEYS.inc_by(written as u64);
        crate::metrics::CATCH_UP_BYTES.inc_by(bytes);
        catch_up.update(|p| {
            p.keys += written as u64;
            p.bytes += bytes;
        });
    }
    Ok(())
}

/// Validates a batch from the wire.
fn entries_of(batch: rpc::CopyBatch) -> Result<Vec<(String, String, TxId)>, String> {
    batch
        .keys
        .into_iter()
        .map(|entry| {
            limits::check_key(&entry.key)?;
            limits::check_value(&entry.value)?;
            let version: TxId = entry.version.parse()?;
            Ok((entry.key, entry.value, version))
        })
        .collect()
}

/// Applies copied entries (the state owner calls this, as the store's one writer):
/// those [`FollowerCore::copied`] takes are written, not synced (the catch-up syncs
/// once at its end). Returns how many were written.
pub fn apply_copied(
    shared: &Shared,
    core: &FollowerCore,
    epoch: u64,
    entries: &[(String, String, TxId)],
) -> Result<usize, String> {
    let taken = core.copied(epoch, entries, &|key| shared.read(key))?;
    let changes: Vec<crate::kvstore::Change<'_>> = taken
        .iter()
        .map(|(key, value, version)| (key.as_str(), Some((value.as_str(), *version))))
        .collect();
    shared
        .kv
        .apply_unsynced(&changes)
        .map_err(|e| format!("writing copied keys failed: {e}"))?;
    Ok(changes.len())
}
