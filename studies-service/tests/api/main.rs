//! studies-service on its own: the real server on a real socket and real
//! Postgres, with patients-service replaced through the `build_with` seam.
//! (The tests with every service running live in `system-tests`.)

mod create;
mod helpers;
mod history;
mod hostile;
mod list;
mod read_update_delete;
mod seam;
mod upgrade;
