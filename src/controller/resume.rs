//! Resuming a Run (`spec.resumeFrom`), the I/O part: read the original Run, plan the reuse
//! ([`crate::reconcilers::resume::plan`]), and copy the reused steps' artifacts server-side
//! into the new Run's prefix before its execution starts. Copying is idempotent, so a
//! reconcile interrupted between the copy and the start copies again and starts once (the
//! execution is named after the Run's UID).

use kube::ResourceExt;
use kube::api::Api;
use tracing::info;

use crate::api::{Flow, ResumeFrom, Run};
use crate::aws;
use crate::aws::error::ErrorClass;
use crate::compile;
use crate::reconcilers::resume::{ResumeError, ResumePlan, plan};

use super::{Context, ReconcileError};

/// Why a resume did not get ready.
pub enum ResumeFailure {
    /// Reuse is refused or impossible: the Run is Stalled with this reason and message.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// The earlier Run has not finished: the Run waits (Pending) and looks again later.
    Waiting { message: String },
    /// Worth retrying (throttling, a network error).
    Retry(ReconcileError),
}

/// Plans the resume and copies the reused artifacts; the plan says where the execution
/// starts and which steps the status lists as reused.
pub async fn prepare(
    ctx: &Context,
    run: &Run,
    resume: &ResumeFrom,
    flow: &Flow,
    artifact_root: &str,
) -> Result<ResumePlan, ResumeFailure> {
    let runs: Api<Run> = Api::namespaced(ctx.kube.clone(), &run.namespace().unwrap_or_default());
    let original = runs
        .get_opt(&resume.run)
        .await
        .map_err(|error| ResumeFailure::Retry(ReconcileError::Kube(error)))?
        .ok_or_else(|| ResumeFailure::Refused {
            reason: "ResumeRefused",
            message: format!(
                "spec.resumeFrom.run: Run {} not found in this namespace",
                resume.run
            ),
        })?;
    let plan =
        plan(run, resume, &flow.spec.steps, &original, artifact_root).map_err(
            |error| match error {
                ResumeError::NotFinished(_) => ResumeFailure::Waiting {
                    message: error.to_string(),
                },
                _ => ResumeFailure::Refused {
                    reason: "ResumeRefused",
                    message: error.to_string(),
                },
            },
        )?;
    let (sse, kms_key_id) = compile::datastore_encryption(Some(flow), &ctx.settings);
    for copy in &plan.copies {
        match aws::s3::copy_prefix(
            &ctx.s3,
            &copy.from,
            &copy.to,
            (sse.as_deref(), kms_key_id.as_deref()),
        )
        .await
        {
            Ok(count) => {
                info!(run = %run.name_any(), step = %copy.step, count, from = %copy.from, "reused artifacts copied");
            }
            Err(error) if error.class == ErrorClass::Terminal => {
                return Err(ResumeFailure::Refused {
                    reason: "ResumeCopyFailed",
                    message: format!(
                        "copying step `{}`'s artifacts from {} to {} failed: {error}",
                        copy.step, copy.from, copy.to
                    ),
                });
            }
            Err(error) => return Err(ResumeFailure::Retry(ReconcileError::Aws(error))),
        }
    }
    Ok(plan)
}
