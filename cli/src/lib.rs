//! The `conveyor` command line's library: the demo, the in-process pipeline it runs (also used by
//! the orchestration benchmark), the deployment history, the operator's commands and the
//! dead-letter commands.

pub mod dead;
pub mod demo;
pub mod history;
pub mod operate;
pub mod stack;
