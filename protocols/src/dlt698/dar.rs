//! DAR, the data access result of every GET, SET and ACTION item: 0 is success, anything else
//! is a named refusal. Names from the notes (§5); both public catalogues agree on them.

use std::fmt;

/// A data access result byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Dar(pub u8);

impl Dar {
    pub const SUCCESS: Dar = Dar(0);
    pub const DENIED: Dar = Dar(3);
    pub const UNDEFINED: Dar = Dar(4);
    pub const AUTH_MISMATCH: Dar = Dar(20);
    pub const AUTH_FAILED: Dar = Dar(23);

    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// A refusal that security (a SECURITY-Request with RN) might lift.
    pub fn wants_security(self) -> bool {
        matches!(self.0, 15 | 20 | 22 | 23)
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "success",
            1 => "hardware fault",
            2 => "temporarily unavailable",
            3 => "read/write denied",
            4 => "object undefined",
            5 => "interface class mismatch",
            6 => "object does not exist",
            7 => "type mismatch",
            8 => "out of range",
            9 => "data block unavailable",
            10 => "fragmented transfer cancelled",
            11 => "not in fragmented transfer",
            12 => "block write cancelled",
            13 => "no block write state",
            14 => "invalid block number",
            15 => "password wrong / unauthorised",
            16 => "baud rate cannot change",
            17 => "year time zones exceeded",
            18 => "daily slots exceeded",
            19 => "tariffs exceeded",
            20 => "security authentication mismatch",
            21 => "duplicate recharge",
            22 => "ESAM verification failed",
            23 => "security authentication failed",
            24 => "customer number mismatch",
            25 => "recharge count error",
            26 => "purchase over hoarding limit",
            27 => "address abnormal",
            28 => "symmetric decryption error",
            29 => "asymmetric decryption error",
            30 => "signature error",
            31 => "meter suspended",
            32 => "time tag invalid",
            33 => "request timed out",
            34 => "ESAM P1P2 wrong",
            35 => "ESAM LC wrong",
            100 => "proxy read succeeded (vendor code)",
            255 => "other",
            _ => "undefined code",
        }
    }
}

impl fmt::Display for Dar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DAR {} ({})", self.0, self.name())
    }
}

impl std::error::Error for Dar {}
