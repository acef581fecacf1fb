//! A small HTTP/1.1 server for `pipe serve`, written for the attacks a deploy receiver meets.
//!
//! One I/O thread reads every connection with `poll(2)`, so a slow or idle client costs a file
//! descriptor and a small buffer, never a thread. The head is parsed with httparse under RFC
//! 9112's strict rules, then the [`Service`] decides from the head alone whether a body may be
//! read and how much ([`Admit`]): a request without valid credentials is answered before any of
//! its body is read. Bodies share one memory budget, of which requests not yet authenticated
//! ([`Admit::Body`]) hold only a share, capped per address; the rest is for [`Admit::Trusted`]
//! requests, and anonymous ones are handled in turn on a share of the handlers. Connections being read are bounded per
//! client address and in total; at a bound the oldest connection of the busiest address is shed,
//! so a flood of slow clients pushes out its own members, not a fresh request. Only a complete
//! request reaches a handler thread (bounded too). A connection whose answer a handler wrote
//! whole is read again for its next request as a new connection is (HTTP/1.1 persistence,
//! unless the client asks to close); every answer the server gives on its own closes its
//! connection and is reported to the service so it can be logged.
//!
//! The rooms: `reader` (the `poll(2)` loop and accepting), `conn` (one connection's phases:
//! head, decision, body, hand-off, linger), `handlers` (the bounded handler threads, kept
//! for the next request), `kept` (connections given back for their next request), `bounds` (the body budget and who is shed at a
//! connection bound), `request` (the strict head parser), `response` and `chunked` (answers,
//! streamed ones as chunks), `service` (what `pipe serve` plugs in).

mod bounds;
mod chunked;
mod conn;
mod handlers;
mod kept;
mod reader;
mod request;
mod response;
mod service;

pub(crate) use reader::serve;
pub(crate) use request::Request;
pub(crate) use response::Response;
pub(crate) use service::{Admit, Limits, Service};
