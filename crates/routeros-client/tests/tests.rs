//! The integration test binary: scripted fake routers, TLS, and the RouterOS emulator.

mod fake;
mod sim;
mod tls;
