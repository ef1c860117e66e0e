"""The content repository: uploads, downloads, thumbnails, remote media, URL previews.

`repository.MediaRepository` is the service the client, federation and admin routes
call; `files` owns the media store folder, `thumbnailer` the Pillow work (run off the
event loop), `preview` the URL previewer, `ports` what we need from other servers.
"""
