//! What lets a person get back into an account without the password: answers to security questions
//! (normalised, then hashed with argon2id like passwords) and single-use reset links issued by an
//! administrator (only the SHA-256 of the token is stored).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sqlx::Row;
use unicode_normalization::UnicodeNormalization as _;

use super::{db_error, now, Directory, Error, User};

/// The questions a user may choose from, by stable id (stored) and text (shown). Fixed, so that the
/// page shown for an unknown username can be made of the same questions as a real one.
pub const SECURITY_QUESTIONS: &[(&str, &str)] = &[
    ("first_pet", "What was the name of your first pet?"),
    ("birth_city", "In which city were you born?"),
    ("first_school", "What was the name of your first school?"),
    (
        "childhood_friend",
        "What is the first name of your childhood best friend?",
    ),
    ("first_street", "On which street did you live as a child?"),
    (
        "first_employer",
        "What was the name of your first employer?",
    ),
    (
        "favourite_teacher",
        "What was the surname of your favourite teacher?",
    ),
    (
        "first_car",
        "What was the make and model of your first car?",
    ),
];

/// Fewest characters of a normalised answer: one-letter answers are guessed at once.
const MIN_ANSWER_CHARS: usize = 2;

/// Most characters of an answer, as typed.
const MAX_ANSWER_CHARS: usize = 256;

/// The text of the question with this id, if it is in the catalogue.
pub fn question_text(id: &str) -> Option<&'static str> {
    SECURITY_QUESTIONS
        .iter()
        .find(|(q, _)| *q == id)
        .map(|(_, text)| *text)
}

/// The form an answer is compared in: Unicode NFKC (so full-width and composed letters match their
/// plain forms), lower case, surrounding whitespace removed and inner runs of whitespace made one
/// space. "  Paris " and "PARIS" are the same answer.
pub fn normalize_answer(answer: &str) -> String {
    let folded: String = answer.nfkc().collect::<String>().to_lowercase();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why an answer cannot be stored, or `None`.
fn answer_problem(answer: &str) -> Option<&'static str> {
    if answer.chars().count() > MAX_ANSWER_CHARS {
        return Some("an answer is too long");
    }
    if normalize_answer(answer).chars().count() < MIN_ANSWER_CHARS {
        return Some("an answer is too short");
    }
    None
}

/// The stored form of a reset token: hex SHA-256.
fn token_hash(token: &str) -> String {
    hex::encode(openssl::sha::sha256(token.as_bytes()))
}

impl Directory {
    /// Replaces the user's security answers with `answers` (question id, answer as typed). The
    /// questions must be distinct catalogue ids and each answer non-trivial. Errors:
    /// [`Error::InvalidAnswer`], [`Error::NotFound`].
    pub async fn set_security_answers(
        &self,
        username: &str,
        answers: &[(String, String)],
    ) -> Result<(), Error> {
        let user_id = self.user_id(username).await?;
        let mut seen = std::collections::HashSet::new();
        for (question, answer) in answers {
            if question_text(question).is_none() {
                return Err(Error::InvalidAnswer("unknown question".to_owned()));
            }
            if !seen.insert(question.as_str()) {
                return Err(Error::InvalidAnswer(
                    "the same question is chosen twice".to_owned(),
                ));
            }
            if let Some(problem) = answer_problem(answer) {
                return Err(Error::InvalidAnswer(problem.to_owned()));
            }
        }
        let mut hashed = Vec::with_capacity(answers.len());
        for (question, answer) in answers {
            hashed.push((question, self.hasher.hash(&normalize_answer(answer)).await?));
        }
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM security_answers WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for (question, hash) in hashed {
            sqlx::query(
                "INSERT INTO security_answers (user_id, question, answer_hash, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(user_id)
            .bind(question)
            .bind(hash)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    /// The catalogue ids of the questions the user answered, in catalogue order.
    pub async fn security_questions_of(&self, user_id: i64) -> Result<Vec<String>, Error> {
        let rows = sqlx::query("SELECT question FROM security_answers WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let stored = rows
            .iter()
            .map(|r| r.try_get::<String, _>("question").map_err(db_error))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SECURITY_QUESTIONS
            .iter()
            .filter(|(id, _)| stored.iter().any(|s| s == id))
            .map(|(id, _)| (*id).to_owned())
            .collect())
    }

    /// Whether every stored answer of the user is matched by `answers` (question id, answer as
    /// typed). Every stored answer costs one argon2 verification whatever the outcome, so timing does
    /// not tell which answer was wrong. False when the user has no answers.
    pub async fn verify_security_answers(
        &self,
        user_id: i64,
        answers: &[(String, String)],
    ) -> Result<bool, Error> {
        let rows =
            sqlx::query("SELECT question, answer_hash FROM security_answers WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        let mut all = !rows.is_empty();
        for row in &rows {
            let question: String = row.try_get("question").map_err(db_error)?;
            let hash: String = row.try_get("answer_hash").map_err(db_error)?;
            let given = answers
                .iter()
                .find(|(q, _)| *q == question)
                .map(|(_, a)| normalize_answer(a))
                .unwrap_or_default();
            if !self.hasher.verify(&given, &hash).await? {
                all = false;
            }
        }
        Ok(all)
    }

    /// Spends the same argon2 work as checking `count` answers, for a recovery naming an unknown
    /// user (or one without answers).
    pub async fn verify_answers_dummy(&self, count: usize) -> Result<(), Error> {
        for _ in 0..count.max(1) {
            self.hasher.verify_dummy("not an answer").await?;
        }
        Ok(())
    }

    /// Issues a single-use password reset link token for the user, valid for `valid`, recorded as
    /// made by `created_by`. Returns the token (43 characters of base64url, 256 random bits); only its
    /// hash is stored. [`Error::NotFound`] for an unknown user.
    pub async fn create_reset_token(
        &self,
        username: &str,
        created_by: &str,
        valid: Duration,
    ) -> Result<String, Error> {
        let user_id = self.user_id(username).await?;
        let mut raw = [0u8; 32];
        openssl::rand::rand_bytes(&mut raw)
            .map_err(|e| Error::PasswordHashing(format!("random generator failed: {e}")))?;
        let token = URL_SAFE_NO_PAD.encode(raw);
        let at = now();
        let expires = at.saturating_add(i64::try_from(valid.as_secs()).unwrap_or(i64::MAX));
        sqlx::query(
            "INSERT INTO password_reset_tokens (token_hash, user_id, created_by, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(&token))
        .bind(user_id)
        .bind(created_by)
        .bind(at)
        .bind(expires)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(token)
    }

    /// Spends a reset token: the user it was issued for when it is unused and unexpired (it is then
    /// used up, atomically, so two simultaneous uses cannot both succeed), `None` otherwise.
    pub async fn consume_reset_token(&self, token: &str) -> Result<Option<User>, Error> {
        if token.is_empty() || token.len() > 64 {
            return Ok(None);
        }
        let hash = token_hash(token);
        let at = now();
        let spent = sqlx::query(
            "UPDATE password_reset_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(&hash)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if spent.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT user_id FROM password_reset_tokens WHERE token_hash = $1")
            .bind(&hash)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let user_id: i64 = row.try_get("user_id").map_err(db_error)?;
        self.get_user(user_id).await
    }

    /// Whether a reset token is currently usable (unused, unexpired), without spending it.
    pub async fn reset_token_usable(&self, token: &str) -> Result<bool, Error> {
        Ok(self.reset_token_user(token).await?.is_some())
    }

    /// The user a usable (unused, unexpired) reset token was issued for, without spending it.
    pub async fn reset_token_user(&self, token: &str) -> Result<Option<User>, Error> {
        if token.is_empty() || token.len() > 64 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT user_id FROM password_reset_tokens \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash(token))
        .bind(now())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match row {
            Some(row) => {
                self.get_user(row.try_get("user_id").map_err(db_error)?)
                    .await
            }
            None => Ok(None),
        }
    }

    /// Revokes every unused reset link of the user (after a successful reset); how many there were.
    pub async fn revoke_reset_tokens(&self, username: &str) -> Result<u64, Error> {
        let user_id = self.user_id(username).await?;
        let result = sqlx::query(
            "UPDATE password_reset_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL",
        )
        .bind(now())
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(result.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_normalised() {
        assert_eq!(normalize_answer("  Paris "), "paris");
        assert_eq!(normalize_answer("New\t  YORK"), "new york");
        // NFKC: full-width letters and the "ﬁ" ligature become plain ones.
        assert_eq!(normalize_answer("ＰＡＲＩＳ"), "paris");
        assert_eq!(normalize_answer("ﬁdo"), "fido");
        // Composed and decomposed forms of é are the same answer.
        assert_eq!(normalize_answer("Cafe\u{301}"), normalize_answer("café"));
        assert_eq!(answer_problem(" a "), Some("an answer is too short"));
        assert_eq!(
            answer_problem(&"x".repeat(300)),
            Some("an answer is too long")
        );
        assert_eq!(answer_problem("Rex"), None);
    }

    #[test]
    fn catalogue_ids_are_unique() {
        let ids: std::collections::HashSet<_> =
            SECURITY_QUESTIONS.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), SECURITY_QUESTIONS.len());
        assert_eq!(
            question_text("first_pet"),
            Some("What was the name of your first pet?")
        );
        assert_eq!(question_text("nope"), None);
    }
}
