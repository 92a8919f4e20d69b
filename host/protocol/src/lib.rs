//! SMTP protocol library (in progress)
