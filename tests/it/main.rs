//! The one integration-test binary. One module per feature area.

mod pathspec;
