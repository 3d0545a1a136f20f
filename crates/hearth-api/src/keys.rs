//! `/v1/keys`: API keys. A key is shown once, when it is created.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::limits::{Limits, MAX_KEY_NAME};
use crate::{Timestamp, Validate, ValidationError};

/// `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
}

impl Validate for CreateKey {
    fn validate(&self, _: &Limits) -> Result<(), ValidationError> {
        if self.name.is_empty() || self.name.chars().count() > MAX_KEY_NAME {
            return Err(ValidationError::KeyName {
                name: self.name.clone(),
            });
        }
        Ok(())
    }
}

/// The answer to `POST /v1/keys`: the only time the key itself is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewKey {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    /// The key itself (`hk_` and 64 hex digits); not retrievable later.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Key {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<Key>,
}
