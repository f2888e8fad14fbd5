//! The master (client) side of a register read: the request PDU and the checks on its reply.
//! Framing is [`super::tcp`] on Modbus TCP; on RTU lines meterd uses tokio-modbus.

use super::plan::RegisterKind;

/// The PDU of a read of `count` registers from `start` (function code 3 or 4).
pub fn read_request(kind: RegisterKind, start: u16, count: u16) -> [u8; 5] {
    let [s0, s1] = start.to_be_bytes();
    let [c0, c1] = count.to_be_bytes();
    [kind.function_code(), s0, s1, c0, c1]
}

/// Why a reply PDU does not answer a read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The slave refused the request: it is there, but will not answer it.
    #[error("exception reply {0}")]
    Exception(u8),
    #[error("reply has function code {got}, not {expected}")]
    OtherFunction { expected: u8, got: u8 },
    #[error("reply carries {got} bytes, not the {expected} of the registers asked for")]
    WrongLength { expected: usize, got: usize },
    #[error("reply is cut short")]
    Truncated,
}

/// The registers a reply PDU carries, into `words` (cleared first), checked against the
/// request: its function code, and exactly `count` registers.
pub fn read_reply(
    kind: RegisterKind,
    count: u16,
    pdu: &[u8],
    words: &mut Vec<u16>,
) -> Result<(), ReplyError> {
    words.clear();
    let expected = kind.function_code();
    match pdu {
        [f, code, ..] if *f == expected | 0x80 => Err(ReplyError::Exception(*code)),
        [f, n, data @ ..] if *f == expected => {
            let want = usize::from(count) * 2;
            // The byte count first: a reply whose count disagrees with what follows it is
            // reported by the count it claims.
            let got = match usize::from(*n) {
                n if n != want => n,
                _ => data.len(),
            };
            if got != want {
                return Err(ReplyError::WrongLength {
                    expected: want,
                    got,
                });
            }
            words.extend(
                data.chunks_exact(2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]])),
            );
            Ok(())
        }
        [f, ..] if *f != expected && *f != expected | 0x80 => {
            Err(ReplyError::OtherFunction { expected, got: *f })
        }
        _ => Err(ReplyError::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::slave;
    use proptest::prelude::*;

    #[test]
    fn a_read_request_is_what_the_simulator_parses() {
        for (kind, request) in [
            (
                RegisterKind::Holding,
                slave::Request::ReadHolding {
                    start: 0x0102,
                    count: 12,
                },
            ),
            (
                RegisterKind::Input,
                slave::Request::ReadInput {
                    start: 0x0102,
                    count: 12,
                },
            ),
        ] {
            assert_eq!(
                slave::parse_pdu(&read_request(kind, 0x0102, 12)),
                Ok(request)
            );
        }
        assert_eq!(
            read_request(RegisterKind::Input, 0x48, 4),
            [4, 0, 0x48, 0, 4]
        );
    }

    #[test]
    fn replies_are_checked_against_their_request() {
        // (what the meter answered, registers asked for, what the master makes of it)
        type Case = (Vec<u8>, u16, Result<Vec<u16>, ReplyError>);
        let cases: Vec<Case> = vec![
            (
                slave::read_response(4, &[1, 0xABCD]),
                2,
                Ok(vec![1, 0xABCD]),
            ),
            (
                slave::exception_response(4, 2),
                2,
                Err(ReplyError::Exception(2)),
            ),
            (
                slave::read_response(3, &[1, 2]),
                2,
                Err(ReplyError::OtherFunction {
                    expected: 4,
                    got: 3,
                }),
            ),
            (
                slave::read_response(4, &[1]),
                2,
                Err(ReplyError::WrongLength {
                    expected: 4,
                    got: 2,
                }),
            ),
            // A byte count that disagrees with the bytes that follow it.
            (
                vec![4, 4, 0, 1, 0],
                2,
                Err(ReplyError::WrongLength {
                    expected: 4,
                    got: 3,
                }),
            ),
            (
                vec![4, 2, 0, 1, 0, 2],
                2,
                Err(ReplyError::WrongLength {
                    expected: 4,
                    got: 2,
                }),
            ),
            (vec![4], 2, Err(ReplyError::Truncated)),
            (vec![0x84], 2, Err(ReplyError::Truncated)),
            (vec![], 2, Err(ReplyError::Truncated)),
            (
                vec![0x83, 2],
                2,
                Err(ReplyError::OtherFunction {
                    expected: 4,
                    got: 0x83,
                }),
            ),
        ];
        let mut words = vec![9, 9, 9];
        for (pdu, count, want) in cases {
            let got =
                read_reply(RegisterKind::Input, count, &pdu, &mut words).map(|()| words.clone());
            assert_eq!(got, want, "{pdu:?}");
        }
    }

    proptest! {
        #[test]
        fn a_reply_of_random_bytes_never_panics_and_never_yields_other_than_asked(
            pdu in proptest::collection::vec(any::<u8>(), 0..260),
            count in 1u16..=125,
        ) {
            let mut words = Vec::new();
            if read_reply(RegisterKind::Holding, count, &pdu, &mut words).is_ok() {
                prop_assert_eq!(words.len(), usize::from(count));
            }
        }
    }
}
