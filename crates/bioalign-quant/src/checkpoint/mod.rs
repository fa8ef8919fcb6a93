//! bnb-4bit checkpoint I/O.
