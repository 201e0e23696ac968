//! The test server's tiny gRPC service, `remora.test.Test`, written against tonic's server
//! machinery directly (no code generation): `Echo` (unary; can fail with a chosen status) and
//! `Count` (server streaming).

use std::pin::Pin;

use http::Request;
use tokio_stream::Stream;
use tonic::{Response, Status};

use remora_proxy::http::{Body, boxed};

pub const ECHO_PATH: &str = "/remora.test.Test/Echo";
pub const COUNT_PATH: &str = "/remora.test.Test/Count";

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// A gRPC status code to answer with instead (0 = OK).
    #[prost(int32, tag = "2")]
    pub fail_with: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The caller's mesh identity, from `l5d-client-id`.
    #[prost(string, tag = "2")]
    pub client_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountRequest {
    #[prost(uint32, tag = "1")]
    pub n: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountReply {
    #[prost(uint32, tag = "1")]
    pub i: u32,
}

type Fut<T> = Pin<Box<dyn std::future::Future<Output = Result<Response<T>, Status>> + Send>>;

struct Echo;

impl tonic::server::UnaryService<EchoRequest> for Echo {
    type Response = EchoReply;
    type Future = Fut<EchoReply>;
    fn call(&mut self, req: tonic::Request<EchoRequest>) -> Self::Future {
        let client_id = req
            .metadata()
            .get("l5d-client-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let req = req.into_inner();
        Box::pin(async move {
            if req.fail_with != 0 {
                return Err(Status::new(
                    tonic::Code::from(req.fail_with),
                    "failing as asked",
                ));
            }
            Ok(Response::new(EchoReply {
                message: req.message,
                client_id,
            }))
        })
    }
}

struct Count;

type CountStream = Pin<Box<dyn Stream<Item = Result<CountReply, Status>> + Send>>;

impl tonic::server::ServerStreamingService<CountRequest> for Count {
    type Response = CountReply;
    type ResponseStream = CountStream;
    type Future = Fut<CountStream>;
    fn call(&mut self, req: tonic::Request<CountRequest>) -> Self::Future {
        let n = req.into_inner().n;
        Box::pin(async move {
            let stream: CountStream =
                Box::pin(tokio_stream::iter((0..n).map(|i| Ok(CountReply { i }))));
            Ok(Response::new(stream))
        })
    }
}

/// Serves one gRPC request.
pub async fn handle(req: Request<remora_proxy::http::RequestBody>) -> http::Response<Body> {
    match req.uri().path() {
        ECHO_PATH => {
            let codec = tonic_prost::ProstCodec::<EchoReply, EchoRequest>::default();
            let rsp = tonic::server::Grpc::new(codec).unary(Echo, req).await;
            rsp.map(boxed)
        }
        COUNT_PATH => {
            let codec = tonic_prost::ProstCodec::<CountReply, CountRequest>::default();
            let rsp = tonic::server::Grpc::new(codec)
                .server_streaming(Count, req)
                .await;
            rsp.map(boxed)
        }
        other => {
            let status = Status::unimplemented(format!("no method {other}"));
            status.into_http::<Body>()
        }
    }
}
