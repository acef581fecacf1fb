//! The integration tests, one binary: each module drives the real `pipe` binary against real git,
//! a real Docker engine, registry, nginx, sshd and HTTP peers, through the harness in `support`.
//! One binary links once and shares the harness; libtest runs its tests on one pool of threads.
//! `cargo test --test it poll::` runs one module, `cargo test --test it NAME` one test.

mod support;

mod attacks;
mod attacks_round2;
mod attacks_round3;
mod attacks_round4;
mod attacks_round5;
mod attacks_round6;
mod author_bounds;
mod build_cache;
mod cli;
mod config;
mod demo;
mod discover;
mod docker;
mod early_failures;
mod faults;
mod fleet;
mod fleet_ssh;
mod forge;
mod hostile_listing;
mod hostile_remote;
mod house;
mod image_line;
mod images;
mod ingress;
mod leaks;
mod link_encoding;
mod metrics;
mod name_collisions;
mod output;
mod package;
mod page;
mod poll;
mod poll_protocols;
mod preview_attacks;
mod previews;
mod process_groups;
mod prune;
mod run;
mod serve;
mod serve_durable;
mod serve_engine_restart;
mod serve_flood;
mod serve_hardening;
mod serve_rollout;
mod ssh;
mod stages;
mod state;
mod swarm_nodes;
mod systemd;
mod target_secrets;
mod trust;
mod zero_downtime;
