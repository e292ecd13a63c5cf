//! The what-if decision about a member, asked by the member or an administrator
//! ([`Runtime::explain_for`]): who is asked about (an id or an email), in which organization,
//! whether the caller may ask, and the decision admission would make for a request at an
//! instant, with its reasons and the budgets it applies, without side effects (no rate-limit
//! token taken, nothing reserved).
//!
//! Core's access function decides who may ask
//! ([`Action::ViewAccessibleModels`] on the [`Resource::Member`]): the member themself, the
//! organization's owners and admins, platform super admins. The organization is chosen from
//! the caller's side ([`Runtime::choose_org`]), so nobody learns about others'
//! organizations; an unknown email, a subject outside the organization and a caller outside
//! it are answered alike ([`ExplainRefusal::NotFound`]).

use chrono::{DateTime, Utc};
use stratai_core::StoreError;
use stratai_core::access::{Action, Actor, DenyReason, OrgGrant, Resource, authorize};
use stratai_core::budget::{BudgetState, BudgetView};
use stratai_core::directory::{Email, PlatformRole};
use stratai_core::error::ValidationError;
use stratai_core::gateway::{ChatMessage, ChatRequest};
use stratai_core::ids::{ModelId, OrgId, TierSlug, UserId};
use stratai_core::money::Money;

use super::{MemberView, Refusal, Runtime, gate_refusal};
use crate::Outcome;
use crate::plan::Plan;

/// Who asks (an authenticated user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExplainCaller {
    /// The caller.
    pub user: UserId,
    /// Whether the caller is a platform super admin (may ask about anyone).
    pub super_admin: bool,
}

/// Whom the question is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExplainSubject {
    /// The caller.
    Caller,
    /// A user by id.
    Id(UserId),
    /// A user by email.
    Email(Email),
}

impl ExplainSubject {
    /// `text` as a user id, else as an email; absent or blank: the caller.
    ///
    /// # Errors
    /// `text` is neither a user id nor a valid email.
    pub fn parse(text: Option<&str>) -> Result<Self, ValidationError> {
        match text.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(Self::Caller),
            Some(text) => match text.parse::<UserId>() {
                Ok(id) => Ok(Self::Id(id)),
                Err(_) => Email::new(text).map(Self::Email),
            },
        }
    }
}

/// The question: a request by the subject, at an instant.
#[derive(Clone, Debug)]
pub struct ExplainQuestion {
    /// Whom it is about.
    pub subject: ExplainSubject,
    /// Organization id or slug (`None`: the caller's only organization).
    pub org: Option<String>,
    /// The model.
    pub model: String,
    /// The request's messages, for the decision about exactly that request (content rules,
    /// token limits, its worst case); `None`: one empty user message.
    pub messages: Option<Vec<ChatMessage>>,
    /// The request's `max_tokens` (`None`: the model's output cap).
    pub max_tokens: Option<u32>,
    /// The instant decided for (`None`: the runtime's now).
    pub at: Option<DateTime<Utc>>,
}

/// The decision admission would make, with its reasons.
#[derive(Debug)]
pub struct ExplainAnswer {
    /// The organization decided in.
    pub org_id: OrgId,
    /// The subject.
    pub user_id: UserId,
    /// The instant decided for.
    pub at: DateTime<Utc>,
    /// Allow, warn or deny.
    pub outcome: Outcome,
    /// For a denial: the refusal a chat request would get (its error code and message).
    pub refusal: Option<Refusal>,
    /// The model's tier, when model access was decided.
    pub tier: Option<TierSlug>,
    /// Every reason, in order (the first decides a denial).
    pub reasons: Vec<String>,
    /// What to do about a denial.
    pub hint: Option<String>,
    /// The worst-case cost a request would reserve (when model access was granted).
    pub worst_case_cost: Option<Money>,
    /// The states at `at` of the budgets the decision applies (those of budget limit rules
    /// included), named as the reasons name them; empty when model access was refused.
    pub budgets: Vec<BudgetView>,
}

/// Why a question is not answered.
#[derive(Debug, thiserror::Error)]
pub enum ExplainRefusal {
    /// No user has the email, or the subject (or the caller) is not a member of the
    /// organization: answered alike.
    #[error("no such member in this organization")]
    NotFound,
    /// The caller may not ask about the subject.
    #[error("{0}")]
    Forbidden(DenyReason),
    /// The organization could not be chosen or the subject's view loaded, or the model is
    /// malformed ([`Refusal::BadRequest`] naming `model`): what a chat request would get.
    #[error("{0}")]
    Refused(Refusal),
    /// A store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl Runtime {
    /// Answers `caller`'s `question`: the subject resolved, the organization chosen from the
    /// caller's side ([`Runtime::choose_org`], so nobody learns about others'
    /// organizations), the caller authorized by core's access function
    /// ([`Action::ViewAccessibleModels`] on the member: the member themself, the
    /// organization's owners and admins, platform super admins), the subject's view loaded,
    /// then [`Runtime::explain`] (no rate-limit token taken, nothing reserved) and the states
    /// of the budgets it applies.
    ///
    /// # Errors
    /// See [`ExplainRefusal`]; they are checked in that order of the steps above, then the
    /// model.
    pub async fn explain_for(
        &self,
        caller: ExplainCaller,
        question: ExplainQuestion,
    ) -> Result<ExplainAnswer, ExplainRefusal> {
        let dir = &self.deps.directory;
        let subject = match question.subject {
            ExplainSubject::Caller => caller.user,
            ExplainSubject::Id(id) => id,
            ExplainSubject::Email(email) => match dir.find_user_by_email(&email).await? {
                Some(user) => user.id,
                None => return Err(ExplainRefusal::NotFound),
            },
        };
        let org = self
            .choose_org(caller.user, question.org.as_deref())
            .await
            .map_err(ExplainRefusal::Refused)?;
        let caller_role = dir
            .get_member(org.id, caller.user)
            .await
            .ok()
            .map(|m| m.role);
        let actor = Actor {
            user_id: caller.user,
            platform_role: if caller.super_admin {
                PlatformRole::SuperAdmin
            } else {
                PlatformRole::User
            },
            active: true,
            orgs: caller_role
                .map(|role| OrgGrant {
                    org_id: org.id,
                    role,
                })
                .into_iter()
                .collect(),
            groups: Vec::new(),
        };
        let resource = Resource::Member {
            org_id: org.id,
            user_id: subject,
        };
        if let Err(denied) = authorize(&actor, Action::ViewAccessibleModels, &resource) {
            return Err(match denied.reason {
                DenyReason::NotAMember => ExplainRefusal::NotFound,
                other => ExplainRefusal::Forbidden(other),
            });
        }
        let view = match self.member_view(org, subject).await {
            Ok(view) => view,
            Err(Refusal::Organization { .. }) => return Err(ExplainRefusal::NotFound),
            Err(other) => return Err(ExplainRefusal::Refused(other)),
        };
        let at = question.at.unwrap_or_else(|| self.deps.clock.now());
        ModelId::new(question.model.clone()).map_err(|e| {
            ExplainRefusal::Refused(Refusal::BadRequest {
                param: "model",
                message: e.to_string(),
            })
        })?;
        let request = ChatRequest {
            model: question.model,
            messages: question.messages.unwrap_or_else(|| {
                vec![ChatMessage {
                    role: "user".to_owned(),
                    content: String::new(),
                }]
            }),
            max_tokens: question.max_tokens,
            temperature: None,
            stream: false,
            user: None,
        };
        let plan = self.explain(&view, &request, at).await?;
        let budgets = match &plan.grant {
            Some(_) => self.budget_views(&view, &plan, at).await?,
            None => Vec::new(),
        };
        Ok(ExplainAnswer {
            org_id: view.org().id,
            user_id: subject,
            at,
            outcome: plan.outcome,
            refusal: plan.refusal.map(|r| gate_refusal(r, &view)),
            tier: plan.grant.as_ref().map(|g| g.tier_slug.clone()),
            reasons: plan.reasons,
            hint: plan.hint,
            worst_case_cost: plan.grant.is_some().then_some(plan.worst_case),
            budgets,
        })
    }

    /// The states at `at` of the budgets `plan` applies, named as its reasons name them.
    async fn budget_views(
        &self,
        view: &MemberView,
        plan: &Plan,
        at: DateTime<Utc>,
    ) -> Result<Vec<BudgetView>, StoreError> {
        let states: Vec<BudgetState> = if plan.budgets.is_empty() {
            Vec::new()
        } else {
            self.deps
                .ledger
                .states(view.org().id, &plan.budgets, at)
                .await?
        };
        Ok(plan.budget_views(states, view.groups()))
    }
}
