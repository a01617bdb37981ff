//! Two-phase commit: the protocol, its cores, and the runtime that drives them.
//!
//! This is the one place the protocol is explained; the other modules' docs say how
//! they keep it and link here. DESIGN.md §1 states the guarantees as a contract; this
//! explains why the design gives them.
//!
//! # Transactions
//!
//! Every write is a transaction with an id `<epoch>.<seq>`: the leader's epoch, raised
//! and journaled at every leader start, and a number within it, so ids are never
//! reused and are ordered; the id is also the version of every key it writes (DESIGN
//! §1.8). A `Put` or `Delete` is a transaction of one write; a `Txn` (DESIGN §6,
//! `crate::txn`) has compares and two branches of ops over many keys. Its *participants*
//! are the followers that hold its keys, its keys' *replicas* (DESIGN §7,
//! `membership.rs`; with `--replication` at least the number of followers, every
//! follower), and every PREPARE names the member and view it is meant for, so a
//! follower that is not that member refuses it. The leader holds one
//! long-lived bidirectional gRPC stream per follower and keeps many transactions in
//! flight on each.
//!
//! 1. **Prepare.** The leader sends PREPARE(the transaction, participants) to every
//!    participant. A follower that can take the locks of every key the transaction
//!    touches evaluates its compares and the GETs of the branch they choose on its copy,
//!    journals its vote, with the participant list and whether the compares held,
//!    durably, and only then answers COMMIT with what it found; otherwise it answers
//!    ABORT. While it holds a lock it answers reads of the key with UNAVAILABLE, never
//!    with the old value.
//! 2. **Decide.** The leader decides ABORT at the first ABORT vote, at a PREPARE it
//!    could not send, when a vote does not come within the vote timeout, or when two
//!    votes found different things (every replica of a key holds the same value and
//!    version, so they never should; it logs this as an error); it decides COMMIT at
//!    the last COMMIT vote, and the decision says which branch applies (the failure
//!    branch if the compares did not hold) and the client hears the GETs' results.
//!
//!    With fewer replicas than followers a participant may hold only some of the keys:
//!    it gets, and votes on, its *part* of the transaction (its keys' compares, writes
//!    and reads, `parts.rs`); the success branch runs only if every part's compares
//!    hold, and a participant that applied a COMMIT reports its branch to a restarted
//!    leader, since the other parts' findings alone may not tell it.
//! 3. **Deliver.** The leader sends the decision to every participant that may have got
//!    the PREPARE, again and again until each ACKs. A follower journals the decision,
//!    applies it, releases the lock, and then ACKs: an ACK means the decision is
//!    durable there.
//!
//! # The commit rule
//!
//! > A transaction is committed if and only if every participant holds a durable
//! > COMMIT vote for it and the leader holds no durable ABORT for it.
//!
//! Everything else follows from this sentence (DESIGN §1.4):
//!
//! - **The commit point is the last durable vote.** Once every vote is COMMIT, the leader
//!   answers the client OK at once, without writing anything: the votes, each journaled
//!   before it was sent, are the record of the commit. A commit costs one round of
//!   fsyncs, on the followers, in parallel, as a Raft write costs one on a quorum.
//! - **An ABORT is journaled before it is sent or answered.** The leader may decide ABORT
//!   on a vote that never arrived, yet that follower may have voted COMMIT: then every
//!   participant holds a durable COMMIT vote, and without a durable ABORT the rule would
//!   make the transaction committed. So the ABORT record must exist before anybody can
//!   act on the ABORT: before a follower applies it, before a client hears "not
//!   applied". An ABORT thus costs the leader an fsync; a commit never does. If the
//!   write fails, the leader writes the same record again until it sticks (it never
//!   changes a decision); if the journal breaks, the leader stops and its restart
//!   decides by the rule.
//! - **The leader's journal holds only what recovery needs**: its epoch and the cluster
//!   id, the ABORTs (and the decisions of classic peers' transactions, below) until
//!   every follower owed one has ACKed it, and a `done` once all have. No `begin`, no
//!   COMMIT (`records.rs`).
//! - **A follower ACKs a decision only once it is durable there**, so a decision the
//!   leader stops delivering is never lost by the follower that got it.
//!
//! # Why it is safe
//!
//! *Atomicity.* Two followers could only apply different outcomes if one was told
//! COMMIT and another ABORT. A COMMIT is sent only when every vote was COMMIT and no
//! ABORT was decided; an ABORT only once it is durable, and the leader never decides
//! both. Across a leader crash the new leader decides by the same rule from durable
//! facts only (the votes the followers journaled, the ABORTs the old leader journaled),
//! so it reaches the decision the old leader sent, if it sent one.
//!
//! *Durability.* A client is told OK only when every vote is COMMIT and durable, and
//! nothing can then produce a durable ABORT for that transaction (the leader never
//! journals an ABORT for a transaction it committed). Whatever crashes, the rule still
//! says committed, and recovery completes it on every participant.
//!
//! *Termination.* Every prepared follower either receives its decision from the leader
//! that sent the PREPARE, or, if that leader dies, from the next one, by recovery.
//!
//! # Recovery: fence, then inquiry
//!
//! A restarted leader knows the ABORTs it journaled and nothing of the commits. It
//! sends every follower, first on each stream after the decisions its journal still
//! owes, a *fence*: a GLOBAL ABORT of `<epoch>.0`, an id no transaction has (classic
//! peers just ACK it). A follower makes the new epoch durable before it answers, and
//! from then on votes ABORT on every PREPARE of an older epoch, also after a restart.
//! Its answer is a report: the older transactions it holds prepared (with their
//! participants and whether its compares held), those it knows decided, and its
//! low-water mark. The report is a
//! snapshot that stays true: a fenced follower that never voted on a transaction never
//! will. For each transaction some follower reports prepared, the leader decides
//! (`recovery.rs`): its own journaled decision if it has one; else COMMIT if a
//! participant knows it committed; ABORT if one voted ABORT, knows it aborted, never
//! voted, or is a classic peer; COMMIT once every participant reports a COMMIT vote;
//! and otherwise it waits for the participants that have not answered. A COMMIT found
//! this way is sent without a record (a later restart finds the same votes), with the
//! branch the votes found (reports that disagree on it mean the votes disagreed: no
//! leader committed it, and it is aborted); an ABORT is journaled first, as always.
//!
//! # Idempotence and low-water marks
//!
//! Networks repeat and delay messages (DESIGN §1.5). A follower answers a repeated
//! PREPARE with the same vote and a repeated decision with another ACK, and refuses a
//! PREPARE of a transaction it knows decided. It need not remember decisions forever:
//! every message carries a *low-water mark*, the smallest id that follower may still
//! hear about, below which everything sent to it is decided and ACKed by it; it forgets
//! what lies below and refuses any PREPARE there, and PREPAREs of epochs older than
//! the newest it has seen. A restarted leader sends no mark until its recovery is
//! complete: a report reads "below my mark" as "voted and ACKed", which holds only for
//! marks set by leaders that knew the transaction (`recovery.rs`).
//!
//! # Order on a stream
//!
//! A stream carries decisions before any PREPARE queued after them, and a new stream
//! carries every undelivered decision first. Transactions queue at the leader on every
//! key they touch, first come first served: one starts only once no transaction that
//! came before it holds any of its keys, and its predecessors' decisions are queued on
//! every stream, so every follower applies them and unlocks the keys before it sees
//! the PREPARE. A transaction joins the queue of every key it touches at once, when it
//! arrives, and waits only for transactions that arrived before it: waiting never forms
//! a cycle, so there is no deadlock. Transactions
//! on different keys run concurrently and share the streams: what many of them queue on
//! one stream at once leaves as one frame (`LeaderMsg.batch`, and `Response.batch` back),
//! to followers that speak protocol 2, so per-message costs are paid per batch.
//!
//! # Classic peers
//!
//! The classic Go tooling's followers echo no transaction id and know none of this. A
//! transaction with such a participant gets the *classic flow*: its decision, COMMIT
//! too, is journaled before the client is answered, and recovery takes a classic peer's
//! silence as ABORT. The same holds for a follower that echoes ids but does not speak
//! protocol 2 (an earlier tpc). A classic PREPARE carries one key and one value, so a
//! transaction with a compare or more than one op can't run with a classic participant:
//! the leader refuses it with FAILED_PRECONDITION naming the follower. A leader learns
//! which followers speak protocol 2 from their answers, the first of which answers the
//! fence every leader sends at start; a transaction that needs protocol 2 waits for that
//! answer (at most a vote timeout).
//!
//! # Reads
//!
//! A follower never answers with a value older than a decision it has voted on: while
//! it holds the key locked, the read is UNAVAILABLE. The leader's `Get` answers a key
//! whose committed write has not reached every follower from the transaction itself (it
//! is committed; the followers may still be locked), and otherwise reads a random
//! replica of the key, trying the others and waiting for decisions when one is
//! locked. So what
//! clients see through the leader is linearizable.
//!
//! A read-only `Txn` usually needs no 2PC: one follower evaluates it on one snapshot of
//! its keys, holding its state lock while it checks that none is locked and reads them
//! all (a decision is applied only while its keys are locked, so none is half-applied).
//! Every transaction the leader has answered as committed was voted on by every
//! replica of its keys, so a replica whose copies of the keys are unlocked has applied
//! it: the
//! snapshot is atomic and linearizable. The leader evaluates it itself when it holds a
//! committed write for every key, and sends it through 2PC (a transaction that writes
//! nothing, queued fairly) when every follower has one of its keys locked, so that a
//! read of a key written without pause does not starve.
//!
//! # Stated limits
//!
//! A transaction in doubt at a restart whose participant is down stays undecided, its
//! keys locked on the others, until that participant is back; and the leader sends no
//! low-water marks meanwhile. If the leader's journal is lost, an ABORT it decided on a
//! missing vote could be lost with it. One leader: while it is down, nothing is written.
//!
//! # The code
//!
//! The rules live in pure state machines with no I/O and no clock (time is an input),
//! and the runtime executes what they return, deciding nothing:
//!
//! - **Cores.** [`leader_core`] (transactions, votes, decisions, delivery, key queues,
//!   marks, the leader's journal rules), [`membership`] (the view: which followers are a
//!   transaction's participants and a read's replicas), [`parts`] (what each of them
//!   runs of it, and what their votes add up to), [`link_core`] (one stream: what goes next, which
//!   reply answers what, timeouts, reconnection), [`recovery`] (the rule over the fence
//!   reports), [`follower_core`] (votes, locks, decisions, fences, legacy messages,
//!   cluster membership) and `follower_batch.rs` (which messages may share a journal
//!   write). They return effects in write-ahead order; a follower's journal replay runs
//!   through the same code. Their tests read as the rule book, and `simulation.rs`
//!   (tests only) drives these same cores through adversarial schedules.
//! - **Runtime.** [`coordinator`] (one task owns the leader core and carries out its
//!   effects), [`link`] (one task per follower stream), [`leader`] (the client API; its
//!   reads go out through `reads.rs`), [`follower`] (the gRPC services) and
//!   `follower_state.rs` (the thread that owns a follower's state, journal and store),
//!   [`admin`] (the operator's status).
//! - **Edges.** [`message`] converts wire messages to domain types and back, parsing
//!   transaction ids once; [`records`] encodes journal records.

pub mod admin;
mod catch_up;
pub mod coordinator;
pub mod follower;
mod follower_batch;
pub mod follower_core;
mod follower_state;
mod follower_termination;
mod key_count;
pub mod leader;
pub mod leader_core;
pub mod leader_journal;
pub mod lease;
pub mod link;
pub mod link_core;
pub mod membership;
pub mod message;
pub mod parts;
mod reads;
pub mod records;
pub mod recovery;
mod routing;
pub mod standby;
pub mod termination;
pub mod trace;
pub mod view_change;

#[cfg(test)]
mod simulation;
