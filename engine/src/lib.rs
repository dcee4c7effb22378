//! ringcast — brokerless UDP multicast pub/sub.

pub mod wire;
pub mod proto;
