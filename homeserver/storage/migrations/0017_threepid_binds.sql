-- Third-party identifiers a user bound at an identity server through us
-- (POST /account/3pid/bind): deactivation and /account/3pid/unbind ask each of those
-- identity servers to forget the binding.
CREATE TABLE user_threepid_id_server (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    id_server TEXT NOT NULL,
    PRIMARY KEY (user_id, medium, address, id_server)
);
