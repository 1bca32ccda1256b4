FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin switchyard

FROM debian:bookworm-slim
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/switchyard"]
