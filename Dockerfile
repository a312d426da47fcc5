# pgmux on Debian 12, built from this repository with the packages tests/deps.sh lists for the
# build (tests/integration/test_packaging.py checks that both lists agree, and that the runtime
# stage installs every library the binary links).
#
#   docker build -t pgmux .
#   docker run --rm -p 6432:6432 -v /etc/pgmux:/etc/pgmux:ro pgmux
#
# The image runs `pgmux -c /etc/pgmux/pgmux.ini` as the unprivileged user pgmux (uid 10001);
# mount the configuration and its auth_file there. docker-compose.yml runs the same demo as
# `make run`.

FROM debian:12-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libev-dev libssl-dev libpq-dev libinih-dev libpg-query-dev liburing-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make clean && make -j"$(nproc)" && make install PREFIX=/usr/local DESTDIR=/install

FROM debian:12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libev4 libssl3 libpq5 libinih1 libpg-query1504.0 liburing2 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent \
        --shell /usr/sbin/nologin pgmux \
    && install -d -m 0755 /etc/pgmux
COPY --from=build /install/usr/local/ /usr/local/
COPY packaging/docker/pgmux.ini packaging/docker/userlist.txt /etc/pgmux/
USER pgmux
EXPOSE 6432 9930
# SIGTERM drains (running transactions finish); give `docker stop` more than shutdown_timeout:
# docker stop -t 45, or stop_grace_period in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgmux"]
CMD ["-c", "/etc/pgmux/pgmux.ini"]
