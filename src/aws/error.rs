//! AWS errors, classified so reconcilers know what to do with them: a terminal error needs a
//! person (Stalled, no retry storm), a retryable one is retried with backoff and jitter, a
//! conflict is requeued quickly (someone else changed the resource in between).

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What a reconciler should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Terminal,
    Retryable,
    Conflict,
}

/// An AWS call that failed: its class, the service's error code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
}

impl AwsError {
    /// A request Flowline could not even build: a bug or an impossible input, never retried.
    pub fn request(error: impl std::fmt::Display) -> Self {
        AwsError {
            class: ErrorClass::Terminal,
            code: "InvalidRequest".into(),
            message: error.to_string(),
        }
    }
}

/// Error codes that retrying cannot fix.
const TERMINAL_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ValidationException",
    "InvalidParameterValue",
    "InvalidParameterException",
    "ClientException",
    "InvalidDefinition",
    "InvalidArn",
    "InvalidName",
    "InvalidExecutionInput",
    "MissingRequiredParameter",
    "ResourceNotFoundException",
    "StateMachineDoesNotExist",
    "StateMachineTypeNotSupported",
    "TooManyTags",
    "LimitExceededException",
    "StateMachineLimitExceeded",
];

/// Error codes meaning another writer got there first.
const CONFLICT_CODES: &[&str] = &[
    "ConflictException",
    "ResourceInUseException",
    "ConcurrentModificationException",
    "StateMachineDeleting",
    "ExecutionAlreadyExists",
    "StateMachineAlreadyExists",
];

/// Classifies an SDK error: transport failures, timeouts, throttling and 5xx are retryable.
/// Credentials that cannot be had are classified by their cause: an AssumeRole that STS
/// refused (AccessDenied: the role's trust or the caller's permission) is terminal, like the
/// call it was for; no credentials at all or a broken configuration too.
pub fn classify<E, R>(error: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let SdkError::DispatchFailure(_) = &error
        && let Some(credentials) = credentials_failure(&error)
    {
        return credentials;
    }
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            let message = service.err().message().unwrap_or_default().to_owned();
            AwsError {
                class: class_of_code(&code),
                code,
                message,
            }
        }
        SdkError::ConstructionFailure(_) => AwsError {
            class: ErrorClass::Terminal,
            code: "InvalidRequest".into(),
            message: format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&error)
            ),
        },
        _ => AwsError {
            class: ErrorClass::Retryable,
            code: "Unavailable".into(),
            message: format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&error)
            ),
        },
    }
}

/// Why credentials could not be had, from the error's chain of causes: STS's answer to an
/// AssumeRole, or a provider that has nothing to give. `None` for anything else (a transport
/// failure reaching STS is retried like any other).
fn credentials_failure(error: &(dyn std::error::Error + 'static)) -> Option<AwsError> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(SdkError::ServiceError(service)) =
            current.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>()
        {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            return Some(AwsError {
                class: class_of_code(&code),
                message: format!(
                    "sts:AssumeRole failed: {}",
                    service.err().message().unwrap_or_default()
                ),
                code,
            });
        }
        if let Some(
            CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_),
        ) = current.downcast_ref::<CredentialsError>()
        {
            return Some(AwsError {
                class: ErrorClass::Terminal,
                code: "NoCredentials".into(),
                message: format!(
                    "{}",
                    aws_smithy_types::error::display::DisplayErrorContext(current)
                ),
            });
        }
        cause = current.source();
    }
    None
}

/// The class of a service error code.
pub fn class_of_code(code: &str) -> ErrorClass {
    if CONFLICT_CODES.contains(&code) {
        ErrorClass::Conflict
    } else if TERMINAL_CODES.contains(&code) {
        ErrorClass::Terminal
    } else {
        ErrorClass::Retryable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(class_of_code("AccessDeniedException"), ErrorClass::Terminal);
        assert_eq!(
            class_of_code("ExecutionAlreadyExists"),
            ErrorClass::Conflict
        );
        assert_eq!(class_of_code("ThrottlingException"), ErrorClass::Retryable);
        assert_eq!(class_of_code("InternalServerError"), ErrorClass::Retryable);
    }
}
