//! studies-service on its own: the real server on a real socket and real
//! Postgres, with patients-service replaced through the `build_with` seam.
//! (The tests with every service running live in `system-tests`.)

mod helpers;
mod seam;
