//! Credential-vending actions: the broker refuses them whatever the policy says, so that an agent
//! cannot turn it into a source of real secrets or long-lived credentials (a policy that allows
//! everything still cannot hand one out). Classification still names them, so `explain` and the
//! audit record show what was asked for.

/// Actions that hand out credentials, secrets, or the means to sign in.
///
/// Choices worth stating:
/// - `kms:Decrypt` is listed: it turns stored ciphertext (envelope-encrypted secrets, SOPS files,
///   encrypted environment files) into plaintext secrets. `Encrypt`/`GenerateDataKey*` are not:
///   they produce fresh material and reveal nothing that already exists (a data key the agent
///   generates protects only what the agent itself encrypts with it).
/// - `kms:DeriveSharedSecret` is listed: the ECDH secret is a fixed function of the KMS private key
///   and a public key, so for a peer's public key it is the secret that peer already shares with
///   the key's owner. (Not classified today, so refused as unclassified; listed so that it stays
///   refused when the classifier learns it.)
/// - `ssm:GetParameter*` are listed whether or not `WithDecryption` is set: the IAM action is the
///   same, SecureString parameters are where secrets live in Parameter Store, and plain ones are
///   often secrets too.
/// - `rds-db:connect` authorizes RDS IAM auth tokens (which the SDK's `generate_db_auth_token`
///   signs client-side), `rds:GenerateDBAuthToken` is kept for callers that name it so.
const VENDING: &[&str] = &[
    // STS: new sessions.
    "sts:AssumeRole",
    "sts:AssumeRoleWithWebIdentity",
    "sts:AssumeRoleWithSAML",
    "sts:AssumeRoot",
    "sts:GetSessionToken",
    "sts:GetFederationToken",
    "sts:GetServiceBearerToken",
    // IAM: long-lived credentials and sign-in.
    "iam:CreateAccessKey",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:ChangePassword",
    "iam:CreateServiceSpecificCredential",
    "iam:ResetServiceSpecificCredential",
    "iam:UploadSSHPublicKey",
    "iam:UploadSigningCertificate",
    // Secret stores.
    "secretsmanager:GetSecretValue",
    "secretsmanager:BatchGetSecretValue",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "ssm:GetParameterHistory",
    "kms:Decrypt",
    "kms:DeriveSharedSecret",
    // Federation and registries.
    "sso:GetRoleCredentials",
    "cognito-identity:GetCredentialsForIdentity",
    "cognito-identity:GetOpenIdToken",
    "cognito-identity:GetOpenIdTokenForDeveloperIdentity",
    "ecr:GetAuthorizationToken",
    "ecr-public:GetAuthorizationToken",
    "codeartifact:GetAuthorizationToken",
    // Databases.
    "rds-db:connect",
    "rds:GenerateDBAuthToken",
    "redshift:GetClusterCredentials",
    "redshift:GetClusterCredentialsWithIAM",
    "redshift-serverless:GetCredentials",
    "dsql:DbConnect",
    "dsql:DbConnectAdmin",
    // Hosts.
    "ec2:GetPasswordData",
    "ec2-instance-connect:SendSSHPublicKey",
    "ec2-instance-connect:SendSerialConsoleSSHPublicKey",
    "lightsail:GetInstanceAccessDetails",
    "iot:CreateKeysAndCertificate",
];

/// Whether `action` (`service:Action`) vends credentials or secrets. IAM action names are
/// case-insensitive, so this comparison is too.
pub fn is_credential_vending(action: &str) -> bool {
    VENDING.iter().any(|a| a.eq_ignore_ascii_case(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vending_actions_are_recognised_in_any_case() {
        for a in [
            "sts:AssumeRole",
            "STS:assumerolewithwebidentity",
            "iam:CreateAccessKey",
            "secretsmanager:GetSecretValue",
            "ssm:GetParameters",
            "kms:Decrypt",
            "kms:DeriveSharedSecret",
            "ec2-instance-connect:SendSerialConsoleSSHPublicKey",
            "sso:GetRoleCredentials",
            "ecr:GetAuthorizationToken",
            "rds-db:connect",
            "cognito-identity:GetCredentialsForIdentity",
        ] {
            assert!(is_credential_vending(a), "{a}");
        }
    }

    #[test]
    fn ordinary_actions_are_not_vending() {
        for a in ["s3:GetObject", "sts:GetCallerIdentity", "kms:Encrypt", "kms:GenerateDataKey", "secretsmanager:DescribeSecret", "sts:AssumeRole*", ""] {
            assert!(!is_credential_vending(a), "{a}");
        }
    }
}
