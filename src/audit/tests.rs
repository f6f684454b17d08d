//! Writer, chain and verify tests over real files.
