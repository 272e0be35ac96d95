//! The socket loop driven through channels.
