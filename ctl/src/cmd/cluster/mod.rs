//! `wkctl cluster ...`: the cluster as a whole: `status` (and `--watch`), `health`, `join`;
//! `cluster verify` is `channel verify` over every channel (`cmd::channel::verify`).

pub mod health;
pub mod join;
pub mod status;
