"""Media: reading and writing video and frame folders, the decode/infer/encode pipeline, `convert_video`, and
the sample scene export validation runs on without a clip. Depends on the foundation and the runtimes."""
