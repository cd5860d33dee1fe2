//! The one error type of the RTP module.

/// Why RTP capabilities or parameters were refused.
///
/// Every variant carries a sentence meant for the developer of the client app: it names the
/// offending field (with its index) and, where it helps, what would have been accepted.
/// [`RtpError::code`] gives the stable machine-readable code for the REST error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// A codec that this worker cannot route, or that the room's router was not created with.
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    /// The media codecs a router was asked to be created with are malformed or inconsistent.
    #[error("invalid media codecs: {0}")]
    InvalidMediaCodecs(String),
    /// A producer's `rtpParameters` are malformed or inconsistent.
    #[error("invalid RTP parameters: {0}")]
    InvalidRtpParameters(String),
    /// A device's `rtpCapabilities` are malformed.
    #[error("invalid RTP capabilities: {0}")]
    InvalidRtpCapabilities(String),
    /// The consuming device cannot decode any codec of the producer.
    #[error("cannot consume: {0}")]
    CannotConsume(String),
}

impl RtpError {
    /// The stable SCREAMING_SNAKE_CASE code of this error, for `{"error": {"code": ...}}`.
    pub fn code(&self) -> &'static str {
        match self {
            RtpError::UnsupportedCodec(_) => "UNSUPPORTED_CODEC",
            RtpError::InvalidMediaCodecs(_) => "INVALID_MEDIA_CODECS",
            RtpError::InvalidRtpParameters(_) => "INVALID_RTP_PARAMETERS",
            RtpError::InvalidRtpCapabilities(_) => "INVALID_RTP_CAPABILITIES",
            RtpError::CannotConsume(_) => "CANNOT_CONSUME",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_has_a_distinct_stable_code() {
        let errors = [
            RtpError::UnsupportedCodec(String::new()),
            RtpError::InvalidMediaCodecs(String::new()),
            RtpError::InvalidRtpParameters(String::new()),
            RtpError::InvalidRtpCapabilities(String::new()),
            RtpError::CannotConsume(String::new()),
        ];
        let codes: Vec<&str> = errors.iter().map(RtpError::code).collect();
        assert_eq!(
            codes,
            [
                "UNSUPPORTED_CODEC",
                "INVALID_MEDIA_CODECS",
                "INVALID_RTP_PARAMETERS",
                "INVALID_RTP_CAPABILITIES",
                "CANNOT_CONSUME"
            ]
        );
    }

    #[test]
    fn message_states_the_category_and_the_reason() {
        let error = RtpError::InvalidRtpParameters("codecs is empty".into());
        assert_eq!(error.to_string(), "invalid RTP parameters: codecs is empty");
    }
}
