//! The codec of the generated gRPC code: tonic-prost's encoding, and decode errors
//! answered by the side at fault (see the module above).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf};
use tonic::Status;
use tonic_prost::ProstEncoder;

use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::{api, rpc};

/// Which side of a call decodes a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A request, decoded by a server: one that does not decode is the caller's
    /// `INVALID_ARGUMENT`.
    Request,
    /// A reply, decoded by a client: one that does not decode is the server's fault,
    /// `INTERNAL` (as tonic answers).
    Reply,
}

/// A message type that some tpc RPC decodes.
pub trait Decoded: Message + Default + Send + 'static {
    /// Its full protobuf name, for error messages.
    const NAME: &'static str;
    /// Who decodes it.
    const SIDE: Side;
}

/// Classifies the message types the RPCs of `api/kv.proto` and `pkg/rpc/*.proto` decode.
macro_rules! decoded {
    ($side:ident: $($package:ident :: $message:ident),+ $(,)?) => {$(
        impl Decoded for $package::$message {
            const NAME: &'static str = concat!(stringify!($package), ".", stringify!($message));
            const SIDE: Side = Side::$side;
        }
    )+};
}

decoded!(Request:
    api::GetRequest, api::PutRequest, api::DeleteRequest, api::TxnRequest,
    rpc::LeaderMsg, rpc::ReadRequest, rpc::StatusRequest, rpc::MembersRequest,
    rpc::CopyRequest, rpc::CatchUpRequest, rpc::ChangeMembersRequest, rpc::LeaseRequest, rpc::DecisionRequest,
    rpc::RaftRequest,
);
decoded!(Reply:
    api::Response, api::TxnResponse,
    rpc::Response, rpc::ReadReply, rpc::StatusReply, rpc::MembersReply,
    rpc::CopyBatch, rpc::CatchUpReply, rpc::ChangeMembersReply, rpc::LeaseReply, rpc::DecisionReply,
    rpc::RaftReply,
);

/// The status for a message of type `U` that does not decode.
fn decode_error<U: Decoded>(error: prost::DecodeError) -> Status {
    let text = error.to_string();
    let detail = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    match U::SIDE {
        Side::Request => Status::invalid_argument(format!(
            "request is not a valid {} protobuf: {detail}",
            U::NAME
        )),
        Side::Reply => Status::internal(format!(
            "reply is not a valid {} protobuf: {detail}",
            U::NAME
        )),
    }
}

/// Refuses a request over [`MAX_GRPC_MESSAGE_BYTES`], naming the limit. Servers read up
/// to [`crate::limits::MAX_GRPC_REQUEST_READ_BYTES`] so that such a request reaches here;
/// clients read replies only up to the limit, so a reply never does.
fn check_size<U: Decoded>(bytes: usize) -> Result<(), Status> {
    if U::SIDE == Side::Request && bytes > MAX_GRPC_MESSAGE_BYTES {
        return Err(Status::invalid_argument(format!(
            "{} request is {bytes} bytes, over the {} MiB message limit",
            U::NAME,
            MAX_GRPC_MESSAGE_BYTES >> 20
        )));
    }
    Ok(())
}

/// Encodes `T` and decodes `U` as `tonic_prost::ProstCodec` does, but answers a `U`
/// that does not decode by [`Decoded::SIDE`].
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Decoded,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder { _type: PhantomData }
    }
}

/// Decodes a `U`; see [`Codec`].
#[derive(Debug, Clone)]
pub struct Decoder<U> {
    _type: PhantomData<U>,
}

impl<U: Decoded> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        check_size::<U>(prost::bytes::Buf::remaining(buf))?;
        U::decode(buf).map(Some).map_err(decode_error::<U>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn decode<U: Decoded>(bytes: &[u8]) -> Result<U, Status> {
        U::decode(bytes).map_err(decode_error::<U>)
    }

    #[test]
    fn a_request_that_does_not_decode_is_invalid_argument_naming_the_message() {
        // Field 1 (key), length-delimited, 2 bytes: 0xff 0xfe is not UTF-8.
        let status = decode::<api::PutRequest>(&[0x0a, 0x02, 0xff, 0xfe]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "request is not a valid api.PutRequest protobuf: PutRequest.key: invalid string \
             value: data is not UTF-8 encoded"
        );
        // A length that runs past the end of the message.
        let status = decode::<rpc::LeaderMsg>(&[0x1a, 0x7f, b'k']).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("request is not a valid rpc.LeaderMsg protobuf: "),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_reply_that_does_not_decode_stays_internal() {
        let status = decode::<api::Response>(&[0xff, 0xff]).unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status
                .message()
                .starts_with("reply is not a valid api.Response protobuf: "),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_request_over_the_message_limit_is_invalid_argument_naming_it() {
        let status = check_size::<api::PutRequest>(MAX_GRPC_MESSAGE_BYTES + 1).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "api.PutRequest request is 16777217 bytes, over the 16 MiB message limit"
        );
        assert!(check_size::<api::PutRequest>(MAX_GRPC_MESSAGE_BYTES).is_ok());
        assert!(check_size::<api::Response>(MAX_GRPC_MESSAGE_BYTES + 1).is_ok());
    }

    #[test]
    fn a_valid_request_decodes_as_tonic_prost_decodes_it() {
        let request = api::PutRequest {
            key: "k".into(),
            value: "v".into(),
        };
        let bytes = request.encode_to_vec();
        assert_eq!(decode::<api::PutRequest>(&bytes).unwrap(), request);
    }
}
