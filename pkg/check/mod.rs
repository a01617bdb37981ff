//! A linearizability checker for client histories of a key-value store.
//!
//! Linearizability is compositional: a history is linearizable if and only if the
//! sub-history of every key is, so each key is checked alone against a register model
//! (a value, or absent). The search is Wing & Gong's, with the memoisation Lowe
//! proposed and the Porcupine checker popularised: walk the history's call and return
//! events in time order; at each call, try to linearize that operation next (its effect
//! must be explained by the model); when a return is reached whose operation has not
//! been linearized, backtrack. A cache of (set of linearized operations, model state)
//! prunes states already explored.
//!
//! An operation whose outcome the client could not learn (a timeout, a lost connection)
//! has no return: it may take effect at any moment after its call, or never. A write of
//! that kind is given a return at infinity, which lets it linearize anywhere after its
//! call, including after everything else (= never); a read of that kind says nothing and
//! is dropped, and so is a write of that kind that no read could have observed (a put
//! whose value no read returned, a delete with no later read of "absent"): it may as
//! well have happened last.

use std::collections::{BTreeMap, HashMap, HashSet};

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// A put of this value.
    Put(String),
    /// A delete.
    Delete,
    /// A read that returned this (None: absent).
    Get(Option<String>),
}

/// One client operation on one key, with its invocation and (if known) response times,
/// in any monotonic unit (e.g. nanoseconds since the test started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it (for reports).
    pub client: usize,
    /// The key.
    pub key: String,
    /// What it did, as far as the client knows.
    pub kind: OpKind,
    /// When it was invoked.
    pub call: u64,
    /// When it returned, if its outcome is known. `None`: unknown (it may or may not
    /// have taken effect); for a `Get`, it is ignored.
    pub ret: Option<u64>,
}

/// Why a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose history admits no linearization.
    pub key: String,
    /// That key's operations, in invocation order.
    pub history: Vec<Operation>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "history of key {:?} is not linearizable:", self.key)?;
        for op in &self.history {
            let ret = op.ret.map_or("?".to_string(), |r| r.to_string());
            writeln!(
                f,
                "  client {:>3}  [{:>12} .. {:>12}]  {:?}",
                op.client, op.call, ret, op.kind
            )?;
        }
        Ok(())
    }
}

/// Checks a whole history, key by key; the first violation found, if any.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, ops) in by_key {
        let ops: Vec<Operation> = ops.into_iter().cloned().collect();
        if !check_register(&ops) {
            let mut history = ops;
            history.sort_by_key(|op| op.call);
            return Err(Violation {
                key: key.to_string(),
                history,
            });
        }
    }
    Ok(())
}

/// Checks one key's operations against a register that starts absent.
pub fn check_register(ops: &[Operation]) -> bool {
    // Reads with unknown outcome constrain nothing. Nor does a put with unknown outcome
    // whose value no read saw: linearizing it after everything else explains the history
    // exactly as well as leaving it out, so it is left out. (Without this, every such
    // put doubles the states to explore.)
    let seen: HashSet<&str> = ops
        .iter()
        .filter_map(|op| match (&op.kind, op.ret) {
            (OpKind::Get(Some(v)), Some(_)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    // Likewise a delete with unknown outcome that no later-ending read of "absent" could
    // have observed.
    let absent_seen_until = ops
        .iter()
        .filter_map(|op| match (&op.kind, op.ret) {
            (OpKind::Get(None), Some(ret)) => Some(ret),
            _ => None,
        })
        .max();
    let ops: Vec<&Operation> = ops
        .iter()
        .filter(|op| match (&op.kind, op.ret) {
            (OpKind::Get(_), None) => false,
            (OpKind::Put(v), None) => seen.contains(v.as_str()),
            (OpKind::Delete, None) => absent_seen_until.is_some_and(|ret| ret > op.call),
            _ => true,
        })
        .collect();
    if ops.is_empty() {
        return true;
    }
    // Values as small ids, so model states are cheap to hash.
    let mut values: HashMap<String, u32> = HashMap::new();
    let mut value_id = |v: &Option<String>| -> u32 {
        match v {
            None => 0,
            Some(v) => {
                let next = values.len() as u32 + 1;
                *values.entry(v.clone()).or_insert(next)
            }
        }
    };
    #[derive(Clone, Copy)]
    enum Step {
        Write(u32),
        Read(u32),
    }
    let steps: Vec<Step> = ops
        .iter()
        .map(|op| match &op.kind {
            OpKind::Put(v) => Step::Write(value_id(&Some(v.clone()))),
            OpKind::Delete => Step::Write(0),
            OpKind::Get(v) => Step::Read(value_id(v)),
        })
        .collect();

    // Events in time order; a call sorts before a return at the same time (overlap).
    #[derive(Clone, Copy)]
    struct Event {
        op: usize,
        is_call: bool,
        time: u64,
    }
    let mut events: Vec<Event> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push(Event {
            op: i,
            is_call: true,
            time: op.call,
        });
        events.push(Event {
            op: i,
            is_call: false,
            time: op.ret.unwrap_or(u64::MAX),
        });
    }
    events.sort_by_key(|e| (e.time, !e.is_call));

    // A doubly linked list over the events, so linearized ops can be lifted out and put back.
    let n = events.len();
    let mut next: Vec<usize> = (1..=n).collect(); // n = end
    let mut prev: Vec<usize> = (0..n)
        .map(|i| if i == 0 { usize::MAX } else { i - 1 })
        .collect();
    let mut head = 0usize;
    let mut call_pos = vec![0usize; ops.len()];
    let mut ret_pos = vec![0usize; ops.len()];
    for (pos, e) in events.iter().enumerate() {
        if e.is_call {
            call_pos[e.op] = pos;
        } else {
            ret_pos[e.op] = pos;
        }
    }
    let unlink = |pos: usize, head: &mut usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[pos], next[pos]);
        if p == usize::MAX {
            *head = q;
        } else {
            next[p] = q;
        }
        if q < n {
            prev[q] = p;
        }
    };
    let relink = |pos: usize, head: &mut usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[pos], next[pos]);
        if p == usize::MAX {
            *head = pos;
        } else {
            next[p] = pos;
        }
        if q < n {
            prev[q] = pos;
        }
    };

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = Vec::new(); // (op, state before it)
    let mut state = 0u32;
    let mut cursor = head;
    while head < n {
        if cursor >= n {
            return false; // cannot happen: the list ends with returns
        }
        let event = events[cursor];
        if event.is_call {
            let op = event.op;
            let after = match steps[op] {
                Step::Write(v) => Some(v),
                Step::Read(v) => (v == state).then_some(state),
            };
            let mut advanced = false;
            if let Some(after) = after {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), after)) {
                    stack.push((op, state));
                    state = after;
                    unlink(call_pos[op], &mut head, &mut next, &mut prev);
                    unlink(ret_pos[op], &mut head, &mut next, &mut prev);
                    cursor = head;
                    advanced = true;
                } else {
                    linearized[op / 64] &= !(1 << (op % 64));
                }
            }
            if !advanced {
                cursor = next[cursor];
            }
        } else {
            // A return of an op not yet linearized: something earlier must change.
            let Some((op, before)) = stack.pop() else {
                return false;
            };
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            relink(ret_pos[op], &mut head, &mut next, &mut prev);
            relink(call_pos[op], &mut head, &mut next, &mut prev);
            cursor = next[call_pos[op]];
        }
    }
    true
}

#[cfg(test)]
mod tests;
