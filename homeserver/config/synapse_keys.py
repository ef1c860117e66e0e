"""The top-level settings Synapse's `homeserver.yaml` knows (its config schema).

An admin moving from Synapse starts us on their existing file: a Synapse setting we do
not implement is logged as a warning naming it (and otherwise ignored), while a key
neither server knows is still an error with "did you mean" (a typo of one of ours must
not pass silently).
"""

from __future__ import annotations

SYNAPSE_TOP_LEVEL_KEYS = frozenset(
    """
    account_threepid_delegates admin_contact alias_creation_rules
    allow_device_name_lookup_over_federation allow_guest_access allow_per_room_profiles
    allow_profile_lookup_over_federation allow_public_rooms_over_federation
    allow_public_rooms_without_auth allow_underscore_prefixed_registration
    allowed_avatar_mimetypes allowed_local_3pids app_service_config_files
    auto_accept_invites auto_join_mxid_localpart auto_join_rooms auto_join_rooms_for_guests
    autocreate_auto_join_room_preset autocreate_auto_join_rooms
    autocreate_auto_join_rooms_federated background_updates bcrypt_rounds
    block_non_admin_invites caches cas_config daemonize database databases
    default_identity_server default_power_level_content_override default_room_version
    delete_stale_devices_after disable_msisdn_registration dummy_events_threshold
    dynamic_thumbnails email enable_3pid_changes enable_3pid_lookup
    enable_authenticated_media enable_local_media_storage enable_media_repo enable_metrics
    enable_registration enable_registration_captcha enable_registration_without_verification
    enable_room_list_search enable_search enable_set_avatar_url enable_set_displayname
    encryption_enabled_by_default_for_room_type event_cache_size exclude_rooms_from_presence
    exclude_rooms_from_sync extra_well_known_client_content federation
    federation_certificate_verification_whitelist federation_client_minimum_tls_version
    federation_custom_ca_list federation_domain_whitelist federation_metrics_domains
    federation_rr_transactions_per_room_per_second federation_sender_instances
    federation_verify_certificates federation_whitelist_endpoint_enabled
    filter_timeline_limit forget_rooms_on_leave forgotten_room_retention_period form_secret
    form_secret_path gc_min_interval gc_thresholds hs_disabled hs_disabled_message
    http_proxy https_proxy include_profile_data_on_invite inhibit_user_in_use_error
    instance_map ip_range_blacklist ip_range_whitelist jwt_config key_refresh_interval
    key_server_signing_keys_path limit_profile_requests_to_users_who_share_rooms
    limit_remote_rooms limit_usage_by_mau listeners log_config login_via_existing_session
    macaroon_secret_key macaroon_secret_key_path manhole manhole_settings
    matrix_authentication_service matrix_rtc mau_appservice_trial_days mau_limit_alerting
    mau_limit_reserved_threepids mau_stats_only mau_trial_days max_avatar_size
    max_event_delay_duration max_image_pixels max_mau_value max_pending_media_uploads
    max_spider_size max_upload_size media_instance_running_background_jobs media_retention
    media_storage_providers media_store_path media_upload_limits metrics_flags modules
    next_link_domain_whitelist no_proxy_hosts nonrefreshable_access_token_lifetime
    notify_appservices_from_worker oembed oidc_providers old_signing_keys opentracing
    outbound_federation_restricted_to password_config pid_file presence
    prevent_media_downloads_from print_pidfile public_baseurl push pusher_instances
    rc_3pid_validation rc_admin_redaction rc_delayed_event_mgmt rc_federation rc_invites
    rc_joins rc_joins_per_room rc_login rc_media_create rc_message rc_presence
    rc_registration rc_registration_token_validity rc_reports rc_room_creation
    rc_third_party_invite rc_user_directory recaptcha_private_key recaptcha_private_key_path
    recaptcha_public_key recaptcha_public_key_path recaptcha_siteverify_api
    redaction_retention_period redis refresh_token_lifetime
    refreshable_access_token_lifetime registration_requires_token registration_shared_secret
    registration_shared_secret_path registrations_require_3pid
    remote_media_download_burst_count remote_media_download_per_second report_stats
    report_stats_endpoint request_token_inhibit_3pid_errors
    require_auth_for_profile_requests require_membership_for_aliases retention
    room_list_publication_rules room_prejoin_state run_background_tasks_on saml2_config
    send_federation sentry serve_server_wellknown server_context server_name server_notices
    session_lifetime signing_key_path soft_file_limit sso start_pushers stats stream_writers
    suppress_key_server_warning templates thumbnail_sizes tls_certificate_path
    tls_private_key_path track_appservice_user_ips track_puppeted_user_ips
    trusted_key_servers turn_allow_guests turn_password turn_shared_secret
    turn_shared_secret_path turn_uris turn_user_lifetime turn_username ui_auth
    unused_expiration_time update_user_directory_from_worker url_preview_accept_language
    url_preview_enabled url_preview_ip_range_blacklist url_preview_ip_range_whitelist
    url_preview_url_blacklist use_appservice_legacy_authorization use_frozen_dicts
    user_agent_suffix user_consent user_directory user_ips_max_age user_types
    web_client_location worker_app worker_daemonize worker_listeners worker_log_config
    worker_manhole worker_name worker_pid_file worker_replication_secret
    worker_replication_secret_path
    """.split()  # noqa: SIM905 (a word list reads better than 226 lines)
)
