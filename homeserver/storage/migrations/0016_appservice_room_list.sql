-- Rooms an application service published in its network's room list
-- (PUT /directory/list/appservice/{networkId}/{roomId}); /publicRooms shows them with
-- third_party_instance_id "<appservice id>|<network id>" or include_all_networks.
CREATE TABLE appservice_room_list (
    appservice_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);
CREATE INDEX appservice_room_list_room ON appservice_room_list (room_id);
