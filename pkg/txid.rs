//! Transaction ids, which are also versions: `<epoch>.<seq>`, ordered.
//!
//! Every transaction of this project's leaders has one: the leader's epoch (raised and
//! journaled at every leader start, so ids are never reused) and a number within it.
//! They compare by epoch, then number, which the low-water marks and the epoch rule of
//! the protocol rely on (`tpc/mod.rs`), and a key's version is the id of the
//! transaction that last wrote it (DESIGN §1.8), so versions compare the same way.

use std::fmt;
use std::str::FromStr;

/// An ordered transaction id, `<epoch>.<seq>` on the wire. Ids compare by epoch, then
/// sequence number, which is what the low-water mark and the epoch rule rely on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId {
    /// The leader epoch that created the transaction.
    pub epoch: u64,
    /// The transaction's number within its epoch, from 1 (0 is the epoch's fence).
    pub seq: u64,
}

impl TxId {
    /// The fence of `epoch` (`<epoch>.0`, an id no transaction has).
    pub fn fence(epoch: u64) -> TxId {
        TxId { epoch, seq: 0 }
    }

    /// The message that hands a follower view `epoch` (`0.<epoch>`: leader epochs, and so
    /// every transaction's, start at 1).
    pub fn view(epoch: u64) -> TxId {
        TxId {
            epoch: 0,
            seq: epoch,
        }
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

impl FromStr for TxId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (epoch, seq) = s
            .split_once('.')
            .ok_or_else(|| format!("transaction id {s:?} is not <epoch>.<seq>"))?;
        let parse = |part: &str| {
            // Only plain decimal digits: "+1" or " 1" would make two spellings of one id.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("transaction id {s:?} is not <epoch>.<seq>"));
            }
            part.parse::<u64>()
                .map_err(|_| format!("transaction id {s:?} is out of range"))
        };
        Ok(TxId {
            epoch: parse(epoch)?,
            seq: parse(seq)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_round_trips_and_orders_by_epoch_then_seq() {
        let a: TxId = "2.10".parse().unwrap();
        assert_eq!(a, TxId { epoch: 2, seq: 10 });
        assert_eq!(a.to_string(), "2.10");
        assert!("1.99".parse::<TxId>().unwrap() < a);
        assert!("2.9".parse::<TxId>().unwrap() < a);
        assert!("3.1".parse::<TxId>().unwrap() > a);
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "+1.2",
            "1.-2",
            "a.b",
            "1 .2",
            "99999999999999999999.1",
        ] {
            assert!(bad.parse::<TxId>().is_err(), "{bad:?} parsed");
        }
    }
}
