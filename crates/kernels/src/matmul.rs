//! Matrix x vector and matrix x matrix products over any tensor format.
