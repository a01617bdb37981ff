//! What a tpc gRPC server accepts off the wire, and how it refuses the rest.
//!
//! DESIGN §1.6: bad input gets `INVALID_ARGUMENT` with a message naming the rule or the
//! limit, and nothing that arrives over the network may panic a node. Left to itself,
//! tonic answers an undecodable request (garbage bytes, a length inside the protobuf
//! that runs past its end, a `string` field that is not UTF-8) with `INTERNAL`.
//!
//! [`Codec`] is the codec of all the generated code (`build.rs` names it with
//! `codec_path`). It encodes with tonic-prost's encoder, so the bytes on the wire are
//! exactly what the classic tooling sends and expects, and decodes with the same
//! `prost::Message::decode` call tonic-prost makes; only the status of a failure
//! differs. The generated clients and servers share this one codec, so each message
//! type that some RPC decodes says which side decodes it ([`Decoded`]): a request that
//! does not decode is the caller's `INVALID_ARGUMENT` ("request is not a valid
//! api.PutRequest protobuf: ..."); a reply that does not decode stays `INTERNAL`, the
//! server's fault and not the caller's (the leader passes a follower's
//! `INVALID_ARGUMENT` on to its own client as the client's mistake, so a garbled answer
//! from a follower must not look like one). A message type an RPC decodes but nobody
//! classified is a compile error, not a silent default.
//!
//! A request over the 16 MiB message limit gets `INVALID_ARGUMENT` naming the limit
//! too: servers read up to four times the limit ([`crate::limits`]) so that the codec
//! sees it; beyond that, tonic answers `OUT_OF_RANGE` from the length prefix alone.
//!
//! Requests that decode but break a limit (a key over 64 KiB, a value over 3 MiB, a
//! `Txn` over 4 MiB) are refused by the services' own validation, which names the limit
//! ([`crate::limits`], [`crate::txn`]).
//!
//! Left as tonic answers them: a unary call whose body holds no message at all
//! (`INTERNAL` "Missing request message."), and the health and reflection services,
//! whose code and codec come with their crates.

mod codec;

pub use codec::{Codec, Decoded, Decoder, Side};
