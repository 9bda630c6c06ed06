"""PostgreSQL: fxchat_send_v2 checks the sender's token in the send's own transaction

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:00:00

fxchat_send_v1 trusted the sender it was given, which a lookup of the
bearer token had found a statement earlier: two round trips per send. v2
takes the token's hash as well and checks, as its first statement, that it
still names the sender, answering 'unknown_sender' otherwise. The server
can then take a sender it authenticated recently from memory
(fxchat.security) and spend one round trip per send.

v1 stays, for workers still running the previous release during a rolling
upgrade; a later migration may drop it.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEND_FUNCTION = r"""
CREATE FUNCTION fxchat_send_v2(
    p_sender_pk bigint,
    p_sender_token_hash bytea,
    p_sender_user_pk bigint,
    p_sender_user text,
    p_sender_device_id text,
    p_key text,
    p_request_hash bytea,
    p_window_ms bigint,
    p_users text,
    p_device_ids text,
    p_key_fields bytea,
    p_message_id text,
    p_suite text,
    p_sent_at bigint,
    p_expires_at bigint,
    p_encrypted_message bytea,
    p_max_queued integer
) RETURNS TABLE (
    outcome text,
    message_id text,
    sent_at bigint,
    expires_at bigint,
    request_hash bytea,
    device_users text[],
    device_ids text[],
    device_pks bigint[]
)
LANGUAGE plpgsql VOLATILE
-- Every lookup below is by a unique or indexed key, whatever the data: plan
-- each statement once per connection instead of again for every call (the
-- planner's default keeps re-planning statements with array parameters,
-- measured at a third of the function's time).
SET plan_cache_mode = force_generic_plan
AS $function$
#variable_conflict use_column
DECLARE
    -- The recipients, in the order listed: comma-separated user ids and
    -- device ids (neither can hold a comma), and their wrapped-key fields
    -- end to end, 124 bytes each (encrypted_aes_key 60, msg_sig 32,
    -- msg_pub_key 32). One value each rather than arrays, which psycopg
    -- would build item by item in Python.
    v_users text[] := string_to_array(p_users, ',');
    v_device_ids text[] := string_to_array(p_device_ids, ',');
    v_earlier record;
    v_user_pks bigint[];
    v_device_pks bigint[];
    v_matched integer;
    v_current integer;
    v_full bigint[];
    v_message_pk bigint;
BEGIN
    -- Every statement below sees what was committed before it started (a
    -- VOLATILE function under READ COMMITTED): the reads after a lock wait
    -- see the change that was waited for.

    -- The sender's token still names the sender (revoking a device clears
    -- its token hash): the caller may have taken the sender from a memory
    -- of recent authentications (fxchat.security) instead of a lookup.
    PERFORM FROM devices d WHERE d.pk = p_sender_pk AND d.token_hash = p_sender_token_hash;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_sender'::text, NULL::text, NULL::bigint, NULL::bigint,
            NULL::bytea, NULL::text[], NULL::text[], NULL::bigint[];
        RETURN;
    END IF;

    IF p_key IS NOT NULL THEN
        SELECT k.request_hash, k.created_at, m.message_id, m.sent_at, m.expires_at
          INTO v_earlier
          FROM idempotency_keys k JOIN messages m ON m.pk = k.message_pk
         WHERE k.device_pk = p_sender_pk AND k.key = p_key;
        IF FOUND THEN
            IF v_earlier.created_at + p_window_ms > p_sent_at THEN
                RETURN QUERY SELECT 'earlier'::text, v_earlier.message_id::text,
                    v_earlier.sent_at, v_earlier.expires_at, v_earlier.request_hash,
                    NULL::text[], NULL::text[], NULL::bigint[];
                RETURN;
            END IF;
            -- Too old to be a retry: forget it, and the key may be used again.
            DELETE FROM idempotency_keys k WHERE k.device_pk = p_sender_pk AND k.key = p_key;
        END IF;
    END IF;

    -- FOR SHARE on the addressed users, in primary-key order: device changes
    -- update the user row, so they wait for this send, or this send waits
    -- for them and then sees their result.
    SELECT array_agg(u.pk) INTO v_user_pks
      FROM (SELECT users.pk FROM users WHERE users.user_id = ANY (v_users)
             ORDER BY users.pk FOR SHARE) u;

    -- The listed devices that are current, in the order listed, and how many
    -- current devices there are: the sets are equal if both counts are the
    -- number listed (the listed pairs are distinct).
    SELECT count(*)::integer, array_agg(d.pk ORDER BY l.n)
      INTO v_matched, v_device_pks
      FROM unnest(v_users, v_device_ids) WITH ORDINALITY AS l(user_id, device_id, n)
      JOIN devices d ON d.device_id = l.device_id
      JOIN users u ON u.pk = d.user_pk AND u.user_id = l.user_id
     WHERE d.revoked_at IS NULL AND d.pk <> p_sender_pk;
    SELECT count(*)::integer INTO v_current
      FROM devices d
     WHERE d.user_pk = ANY (v_user_pks) AND d.revoked_at IS NULL AND d.pk <> p_sender_pk;
    IF v_matched <> cardinality(v_device_ids) OR v_current <> v_matched THEN
        RETURN QUERY
        SELECT 'recipients'::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bytea,
               array_agg(u.user_id::text), array_agg(d.device_id::text), array_agg(d.pk)
          FROM devices d JOIN users u ON u.pk = d.user_pk
         WHERE d.user_pk = ANY (v_user_pks) AND d.revoked_at IS NULL AND d.pk <> p_sender_pk;
        RETURN;
    END IF;

    -- Lock the recipients' rows in primary-key order (two sends to
    -- overlapping devices never deadlock) and until commit, so that copies
    -- enter each queue in commit order (the fetch cursor relies on it).
    SELECT array_agg(d.pk ORDER BY d.pk) FILTER (WHERE d.queued >= p_max_queued)
      INTO v_full
      FROM (SELECT devices.pk, devices.queued FROM devices WHERE devices.pk = ANY (v_device_pks)
             ORDER BY devices.pk FOR NO KEY UPDATE) d;
    IF v_full IS NOT NULL THEN
        RETURN QUERY
        SELECT 'queue_full'::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bytea,
               array_agg(u.user_id::text ORDER BY d.pk), array_agg(d.device_id::text ORDER BY d.pk),
               array_agg(d.pk ORDER BY d.pk)
          FROM devices d JOIN users u ON u.pk = d.user_pk
         WHERE d.pk = ANY (v_full);
        RETURN;
    END IF;
    UPDATE devices SET queued = devices.queued + 1 WHERE devices.pk = ANY (v_device_pks);

    INSERT INTO messages (message_id, sender_user_pk, sender_user, sender_device_id, suite,
                          sent_at, expires_at)
    VALUES (p_message_id, p_sender_user_pk, p_sender_user, p_sender_device_id, p_suite,
            p_sent_at, p_expires_at)
    RETURNING messages.pk INTO v_message_pk;
    INSERT INTO bodies (message_pk, encrypted_message) VALUES (v_message_pk, p_encrypted_message);
    -- state 0: pending (fxchat.models.CopyState.PENDING).
    INSERT INTO copies (message_pk, device_pk, state, expires_at,
                        encrypted_aes_key, msg_sig, msg_pub_key)
    SELECT v_message_pk, c.device_pk, 0, p_expires_at,
           substring(p_key_fields FROM (c.n::integer - 1) * 124 + 1 FOR 60),
           substring(p_key_fields FROM (c.n::integer - 1) * 124 + 61 FOR 32),
           substring(p_key_fields FROM (c.n::integer - 1) * 124 + 93 FOR 32)
      FROM unnest(v_device_pks) WITH ORDINALITY AS c(device_pk, n);
    -- A concurrent twin of this send fails here on the key's primary key; it
    -- is retried and then answered 'earlier'.
    IF p_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (device_pk, key, request_hash, message_pk, created_at)
        VALUES (p_sender_pk, p_key, p_request_hash, v_message_pk, p_sent_at);
    END IF;
    RETURN QUERY SELECT 'stored'::text, p_message_id, p_sent_at, p_expires_at, NULL::bytea,
        NULL::text[], NULL::text[], NULL::bigint[];
END;
$function$
"""


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(SEND_FUNCTION)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION fxchat_send_v2")
