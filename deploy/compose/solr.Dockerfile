# The compose Solr nodes: the stock image plus TinyTags' vector-format codec (deploy/solr/src/main/
# java/tinytags/solr), which solr_conf/solrconfig.xml names as its codecFactory: without it no core
# of the configset loads. The jar goes into Solr's WEB-INF/lib, Lucene's own classpath, because a
# segment written with tinytags.vector.format=flat names its vector format and Lucene loads that
# by SPI from there (a core's or solr home's lib folder is not searched for it).
# Compiled here against the image's own Solr and Lucene jars, so no Maven run is needed.
FROM eclipse-temurin:17.0.15_6-jdk-jammy AS plugin
COPY --from=solr:9.10.1 /opt/solr/server/solr-webapp/webapp/WEB-INF/lib/ /solr-lib/
COPY deploy/solr/src/main/java/tinytags/solr/ /src/tinytags/solr/
COPY deploy/solr/src/main/resources/META-INF/services/ /classes/META-INF/services/
RUN javac --release 17 -cp '/solr-lib/*' -d /classes /src/tinytags/solr/*.java \
 && jar cf /tinytags-solr-vectors.jar -C /classes .

FROM solr:9.10.1
COPY --from=plugin /tinytags-solr-vectors.jar /opt/solr/server/solr-webapp/webapp/WEB-INF/lib/
