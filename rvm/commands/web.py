"""`rvm web`: its arguments and how it runs; the work is `rvm.web.site`."""
from rvm.web.site import DEFAULT_PORT, bind, build, make_server, url_of


def add_arguments(parser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="TF.js model folders and/or fp32 .onnx files (none with --serve: serve --output as built)")
    parser.add_argument("-o", "--output", default="rvm-web", help="folder to write (default rvm-web)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--serve", action="store_true", help="then serve the folder on 127.0.0.1 until Ctrl+C")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port for --serve (default {DEFAULT_PORT}; "
                                                                       f"0 picks a free one)")


def command(args) -> int:
    if args.models or not args.serve:
        # with --serve the port is bound first, so a busy one is reported before anything is written
        server = bind(args.output, args.port) if args.serve else None
        try:
            build(args.models, args.output, overwrite=args.overwrite)
        except BaseException:
            if server is not None:
                server.server_close()
            raise
        print(f"built {args.output}")
        if server is None:
            return 0
    else:
        server = make_server(args.output, args.port)
    print(f"serving {args.output} at {url_of(server)} (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
