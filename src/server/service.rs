//! What `pipe serve` plugs into the server: its limits, and the service that decides from a
//! request's head and answers complete requests.

use std::net::IpAddr;
use std::time::Duration;

use super::request::Request;
use super::response::Response;

/// Limits that keep one client from hurting the others, and anonymous clients from taking
/// what an authenticated request needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Time allowed for the request line and headers, from the connection's accept.
    pub head_timeout: Duration,
    /// Time allowed for the body, from the end of the head.
    pub body_timeout: Duration,
    /// Connections being read at once; at the bound the oldest of the busiest address is shed.
    pub connections: usize,
    /// Connections being read at once from one address.
    pub per_client: usize,
    /// Bytes of unparsed heads held at once, across all connections; beyond it the oldest
    /// reader of the address holding the most is shed.
    pub head_memory: usize,
    /// Bytes of request bodies held at once, across all connections; beyond it `503`.
    pub body_memory: usize,
    /// Of `body_memory`, what requests not yet authenticated ([`Admit::Body`]) may hold at
    /// once; the rest is kept for [`Admit::Trusted`] requests.
    pub untrusted_body_memory: usize,
    /// What requests not yet authenticated from one address may hold at once.
    pub untrusted_body_per_client: usize,
    /// Requests handled at once (each on its own thread); beyond it `503`.
    pub handlers: usize,
    /// Of `handlers`, how many requests not yet authenticated may take at once; beyond it a
    /// complete one waits its turn, its body held within the anonymous share.
    pub untrusted_handlers: usize,
    /// How many of those from one address.
    pub untrusted_handlers_per_client: usize,
    /// Answers to requests not authenticated written at once, once handled (a streamed log, a
    /// page to a slow reader): they hold a handler thread but not the anonymous share above,
    /// which only bounds the work done before credentials are checked. Beyond it a streamed
    /// or long answer is `503`.
    pub untrusted_answers: usize,
    /// How many of those to one address.
    pub untrusted_answers_per_client: usize,
    /// Time allowed to write one answer (and each write at most `body_timeout`).
    pub answer_timeout: Duration,
}

/// What the service decides from a request's head.
pub(crate) enum Admit {
    /// Answer now, without reading the body; the service logged it.
    Answer(Response),
    /// Not authenticated yet (a signature needs the body, a page may be public): read a body of
    /// at most this many bytes (larger `Content-Length` → `413`) within what anonymous requests
    /// may hold, per address and in all, then handle.
    Body(u64),
    /// Authenticated from the head, or from an address that authenticated recently: the same,
    /// with the whole budget and every handler open to it.
    Trusted(u64),
}

/// What `pipe serve` plugs into the server.
pub(crate) trait Service: Send + Sync + 'static {
    /// Decides from the head (its `body` is empty); runs on the I/O thread, so it must not block.
    fn admit(&self, head: &Request, peer: IpAddr) -> Admit;
    /// Answers a complete request, on a handler thread. `authenticated` is called once the
    /// request proved its credentials: what it held of the anonymous share is given back then,
    /// so a request that goes on to wait (`?wait=`) waits as an authenticated one.
    fn handle(&self, request: &Request, peer: IpAddr, authenticated: &dyn Fn()) -> Response;
    /// The server answered `status` on its own (`head` is `None` when none was parsed).
    fn refused(&self, head: Option<&Request>, peer: IpAddr, status: u16);
    /// Whether `peer` authenticated lately (as [`Admit::Trusted`] reads it): asked once a
    /// request is handled, so the answer to a request that authenticated while handled is
    /// written as a trusted one.
    fn trusted(&self, peer: IpAddr) -> bool;
}
