pub mod journal;
pub mod kvstore;
pub mod limits;
pub mod tpc;

pub mod proto {
    pub mod api {
        tonic::include_proto!("api");
    }
    pub mod rpc {
        tonic::include_proto!("rpc");
    }
}
